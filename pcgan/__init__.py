"""pcgan: StyleGAN2 for 3D faces as coloured point clouds."""

import importlib

# Public name -> module that defines it. Imported on first use (module-level __getattr__), so
# `import pcgan` and the CLI stay cheap and torch loads only when a network is needed.
_LAZY = {
    "Generator": "pcgan.networks",
    "Discriminator": "pcgan.networks",
    "load_generator": "pcgan.checkpoint",
    "GridMeta": "pcgan.grid",
    "Camera": "pcgan.grid",
    "grid_to_points": "pcgan.grid",
    "grid_to_mesh": "pcgan.grid",
    "grid_normals": "pcgan.grid",
    "mirror": "pcgan.grid",
    "load_dataset": "pcgan.dataset",
    "write_point_ply": "pcgan.export",
    "write_mesh": "pcgan.export",
    "export_grid": "pcgan.export",
    "PcganError": "pcgan.errors",
    "generate_grids": "pcgan.generate",
    "compute_metrics": "pcgan.metrics",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pcgan' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
