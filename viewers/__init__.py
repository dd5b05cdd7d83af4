"""Open3D viewers and headless renderers.

- :mod:`viewers.loading`: .ply / .obj / .npy grids / dataset dirs -> :class:`~viewers.loading.Item`
  (points, colours, normals, triangles, frontal framing); colour modes.
- :mod:`viewers.render`: headless pictures (egl / filament / numpy backends), views,
  turntables, contact sheets, PNG / GIF; ``render_views`` for training snapshots and scripts.
- :mod:`viewers.window`: the interactive Open3D window and its key callbacks.
- :mod:`viewers.explorer`: the latent explorer (Open3D GUI) over a trained generator.
- :mod:`viewers.syslibs`: which system libraries Open3D needs, and their apt packages.
- :mod:`viewers.view_cli`, :mod:`viewers.render_cli`: ``pcgan view`` and ``pcgan render``.

Open3D is imported inside functions only, so ``viewers.render`` works without it (numpy backend).
"""
