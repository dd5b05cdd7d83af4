"""Open3D viewers and headless renderers."""
