"""Scans -> XYZRGB grid datasets (Open3D)."""
