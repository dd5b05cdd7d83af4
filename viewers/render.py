"""Headless pictures of point clouds, meshes and grids: views, turntables, contact sheets.

A picture is drawn by one of three interchangeable backends; all get the same per-point
colours (computed in :func:`viewers.loading.point_colors`, so ``lit``/``shade``/``depth`` look
alike everywhere) and the same pinhole camera, and draw points as squares ``point_size``
pixels wide:

``egl``       Open3D's legacy Visualizer in an invisible window, OpenGL through EGL (Mesa's
              software rasteriser on a machine without a GPU).
``filament``  Open3D's ``OffscreenRenderer`` (Filament), through Vulkan (Mesa lavapipe
              without a GPU); post-processing off so colours come out as stored.
``numpy``     a z-buffered point splatter in numpy (meshes: Open3D's CPU ray caster, or their
              vertices splatted when Open3D is absent). No GL, no Open3D for point clouds: it
              works on a bare training host.

``auto`` takes the first of ``egl``, ``filament``, ``numpy`` that starts on this machine (the
Filament one is first tried in a child process, since a broken Vulkan setup can abort the
process instead of raising) and logs which one at INFO level (``--verbose``).

Cameras: each item carries a frontal framing (:class:`viewers.loading.Framing`); a view turns
the camera about the vertical axis through its target by a yaw angle. Yaw +45 (``left``)
moves the camera toward +x, showing the face's own left side (+x is the image's right in the
front view); ``right`` is -45. Turntables sweep the yaw back and forth (or all the way round).

Library entry point for training snapshots and scripts: :func:`render_views`, which returns
``uint8 [B, V, S, S, 3]`` pictures from grids or items. Images are written with Pillow.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from pcgan.errors import PcganError
from pcgan.fileio import atomic_path
from pcgan.grid import GridMeta
from viewers import syslibs
from viewers.loading import Framing, Item, grid_item, point_colors, view_basis

log = logging.getLogger(__name__)

BACKENDS = ("auto", "egl", "filament", "numpy")
AUTO_ORDER = ("egl", "filament", "numpy")
VIEW_YAWS = {"front": 0.0, "left": 45.0, "right": -45.0}   # named views: camera yaw in degrees
DEFAULT_SIZE = 512
DEFAULT_SWEEP = 30.0            # turntable: yaw swings +-this many degrees (>= 360: full turns)
BACKGROUND = (24, 24, 24)       # dark grey, as in the export previews
MAX_POINT_SIZE = 16
SHEET_PAD = 4                   # pixels between sheet cells


class BackendUnavailable(RuntimeError):
    """A rendering backend cannot start on this machine (the message says why)."""


# ---------------------------------------------------------------------------------------------
# Views and cameras


def parse_views(text: str | Sequence) -> list[tuple[str, float]]:
    """``"front,left,30"`` (or a list of names / yaw degrees) -> ``[(label, yaw_deg), ...]``."""
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out = []
    for p in parts:
        if isinstance(p, (int, float)) and not isinstance(p, bool):
            out.append((f"{float(p):g}", float(p)))
        elif p in VIEW_YAWS:
            out.append((p, VIEW_YAWS[p]))
        else:
            try:
                out.append((str(p), float(p)))
            except (TypeError, ValueError):
                raise PcganError(f"view {p!r}: use {', '.join(VIEW_YAWS)} or a yaw angle in degrees "
                                 f"(e.g. 'front,left,right' or 'front,30,-30')") from None
    if not out:
        raise PcganError("no views given: use e.g. --views front,left,right")
    return out


def turntable_yaws(frames: int, sweep: float = DEFAULT_SWEEP) -> list[float]:
    """Yaw per frame of a looping turntable: ``sweep * sin(2 pi k / frames)`` (front first,
    swinging to the left side, back through the front to the right side), or for
    ``sweep >= 360`` a full turn in equal steps."""
    if frames < 1:
        raise PcganError(f"turntable of {frames} frames: give at least 1 (e.g. --turntable 36)")
    if sweep >= 360:
        return [360.0 * k / frames for k in range(frames)]
    return [float(sweep * math.sin(2 * math.pi * k / frames)) for k in range(frames)]


def camera_pose(framing: Framing, yaw_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(eye [3], target [3]) of the framing's camera turned by ``yaw_deg`` about the vertical
    axis through the target; up is +y."""
    target = np.asarray(framing.target, np.float64)
    a = math.radians(yaw_deg)
    eye = target + framing.distance * np.array([math.sin(a), 0.0, math.cos(a)])
    return eye, target


def focal_px(fov_deg: float, size: int) -> float:
    return (size / 2.0) / math.tan(math.radians(fov_deg) / 2.0)


def auto_point_size(item: Item, size: int) -> int:
    """Splat side in pixels so neighbouring points at the target's depth touch (a grid drawn
    at its own resolution: 1 pixel), with 20% spare for surfaces nearer the camera."""
    spacing_px = item.spacing * focal_px(item.framing.fov_deg, size) / item.framing.distance
    return int(min(MAX_POINT_SIZE, max(1, math.ceil(spacing_px * 1.2 - 0.2))))


# ---------------------------------------------------------------------------------------------
# Backends


class NumpyBackend:
    """Z-buffered square splats in numpy; meshes by Open3D's CPU ray caster when available."""

    name = "numpy"

    def __init__(self, size: int):
        self.size = size
        self._scene = (None, None)      # (item, its RaycastingScene): turntables reuse it

    def draw(self, item: Item, colors: np.ndarray, eye, target, fov_deg: float, point_size: int,
             background) -> np.ndarray:
        if item.is_mesh:
            try:
                if self._scene[0] is not item:
                    self._scene = (item, raycasting_scene(item))
                return raycast_mesh(item, colors, eye, target, fov_deg, self.size, background, self._scene[1])
            except (ImportError, OSError):
                log.debug("Open3D not importable: drawing %s's vertices as points", item.name)
        return splat_points(item.points, colors, eye, target, fov_deg, self.size, point_size, background)

    def close(self) -> None:
        pass


def splat_points(points: np.ndarray, colors: np.ndarray, eye, target, fov_deg: float, size: int,
                 point_size: int = 1, background=BACKGROUND) -> np.ndarray:
    """Draw ``points [N, 3]`` with ``colors [N, 3]`` (in [0, 1]) as ``point_size``-pixel squares,
    nearest point wins: ``uint8 [size, size, 3]``.

    Pinhole camera at ``eye`` looking at ``target`` (up +y), full field of view ``fov_deg``;
    pixel (row i, column j) covers [j, j + 1) x [i, i + 1) in image coordinates, principal
    point at the image centre (the grid camera's convention, so a grid drawn at its own
    resolution lands each point on its own pixel)."""
    basis = view_basis(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    pc = (points.astype(np.float64) - eye) @ basis.T                  # [N, 3] camera frame, looking along -z
    depth = -pc[:, 2]
    front = depth > 1e-6
    pc, depth, cols = pc[front], depth[front], colors[front]
    f = focal_px(fov_deg, size)
    u = f * pc[:, 0] / depth + size / 2.0                              # [N] columns
    v = -f * pc[:, 1] / depth + size / 2.0                             # [N] rows
    ps = max(1, int(point_size))
    # Squares start at (u0, v0); draw on a canvas padded by ps on every side so no square
    # needs clipping (one bounds test per point), then crop. Depth test: per-pixel minimum
    # (np.minimum.at), then each square pixel keeps the point whose depth equals it.
    u0 = np.floor(u - (ps - 1) / 2.0).astype(np.int64)
    v0 = np.floor(v - (ps - 1) / 2.0).astype(np.int64)
    ok = (u0 > -ps) & (u0 < size) & (v0 > -ps) & (v0 < size)
    W = size + 2 * ps                                                  # padded canvas side
    base = (v0[ok] + ps) * W + (u0[ok] + ps)                           # [M] top-left pixel
    offsets = np.array([dy * W + dx for dy in range(ps) for dx in range(ps)], np.int64)
    flat = (offsets[:, None] + base[None, :]).ravel()                  # [ps*ps*M]
    d = np.tile(depth[ok].astype(np.float32), len(offsets))
    src = np.tile(np.flatnonzero(ok), len(offsets))
    zbuf = np.full(W * W, np.inf, np.float32)
    np.minimum.at(zbuf, flat, d)
    win = d <= zbuf[flat]                                              # ties: equal depth, any colour will do
    img = np.empty((W * W, 3), np.uint8)
    img[:] = np.asarray(background, np.uint8)
    img[flat[win]] = _to_u8(cols[src[win]])
    return img.reshape(W, W, 3)[ps:ps + size, ps:ps + size].copy()


def raycasting_scene(item: Item):
    """An Open3D ``RaycastingScene`` holding the item's triangles (ImportError without Open3D)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(item.points.astype(np.float32)),
                        o3d.core.Tensor(item.faces.astype(np.uint32)))
    return scene


def raycast_mesh(item: Item, colors: np.ndarray, eye, target, fov_deg: float, size: int,
                 background=BACKGROUND, scene=None) -> np.ndarray:
    """Draw a mesh by casting one ray per pixel centre (Open3D ``RaycastingScene``, CPU);
    colours interpolated from the vertices. ``uint8 [size, size, 3]``. ``scene``: the item's
    :func:`raycasting_scene`, when already built. Raises ImportError without Open3D."""
    import open3d as o3d

    basis = view_basis(np.asarray(eye, np.float64), np.asarray(target, np.float64))
    f = focal_px(fov_deg, size)
    c = (np.arange(size) + 0.5 - size / 2.0) / f
    xs, ys = np.meshgrid(c, -c, indexing="xy")                         # [S, S] right, up
    dirs = xs[..., None] * basis[0] + ys[..., None] * basis[1] - basis[2]
    rays = np.concatenate([np.broadcast_to(eye, dirs.shape), dirs], axis=-1).astype(np.float32)
    scene = raycasting_scene(item) if scene is None else scene
    hit = scene.cast_rays(o3d.core.Tensor(rays))
    tri = hit["primitive_ids"].numpy().astype(np.int64)                # [S, S], INVALID where missed
    ok = np.isfinite(hit["t_hit"].numpy())
    uv = hit["primitive_uvs"].numpy()                                  # [S, S, 2] weights of corners 1, 2
    img = np.empty((size, size, 3), np.uint8)
    img[:] = np.asarray(background, np.uint8)
    corners = item.faces[tri[ok]]                                      # [M, 3]
    w = np.concatenate([1.0 - uv[ok].sum(-1, keepdims=True), uv[ok]], axis=1)   # [M, 3]
    img[ok] = _to_u8((colors[corners] * w[:, :, None]).sum(1))
    return img


@contextlib.contextmanager
def _captured_output(keep: list[str]):
    """Send the C++ chatter of GL/Vulkan start-up (fds 1 and 2) to a temporary file, appended
    to ``keep`` for debug logging. Python's own streams are flushed first."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        try:
            os.dup2(tmp.fileno(), 1)
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            tmp.seek(0)
            keep.append(tmp.read().decode("utf-8", "replace"))


def _import_open3d():
    try:
        import open3d as o3d
    except (ImportError, OSError) as exc:
        hint = syslibs.hint("open3d")
        raise BackendUnavailable(f"cannot import open3d ({exc})" + (f"; {hint}" if hint else "")) from None
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
    return o3d


def _preload_triton() -> None:
    """Import Triton (torch.compile's GPU compiler) before the first OpenGL context, if installed.

    Mesa's software OpenGL (llvmpipe) and Triton each carry an LLVM; once Mesa's is loaded,
    importing triton (which ``torch._dynamo`` does) segfaults the process. Loaded the other
    way round both work, so a training loop that renders snapshots and later compiles is safe."""
    if "triton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken triton must not stop rendering
        log.debug("could not preload triton (%s)", exc)


class LegacyEGLBackend:
    """Open3D's legacy Visualizer with an invisible window: EGL offscreen without a display."""

    name = "egl"

    def __init__(self, size: int):
        _preload_triton()
        o3d = _import_open3d()
        self.size = size
        self.vis = o3d.visualization.Visualizer()
        chatter: list[str] = []
        with _captured_output(chatter):
            ok = self.vis.create_window(window_name="pcgan", width=size, height=size, visible=False)
        log.debug("egl start-up output: %s", chatter[0].strip())
        if not ok:
            hint = syslibs.hint("egl")
            raise BackendUnavailable("Open3D could not create an offscreen EGL window"
                                     + (f"; {hint}" if hint else " (see --verbose output)"))
        self._o3d = o3d

    def draw(self, item: Item, colors, eye, target, fov_deg: float, point_size: int, background) -> np.ndarray:
        o3d, vis, S = self._o3d, self.vis, self.size
        vis.clear_geometries()
        vis.add_geometry(_o3d_geometry(item, colors), reset_bounding_box=True)
        opt = vis.get_render_option()
        opt.point_size = float(point_size)
        opt.light_on = False                      # colours arrive shaded already
        opt.mesh_show_back_face = True
        opt.background_color = np.asarray(background, np.float64) / 255.0
        basis = view_basis(np.asarray(eye, np.float64), np.asarray(target, np.float64))
        params = o3d.camera.PinholeCameraParameters()
        f = focal_px(fov_deg, S)
        # the legacy view control insists on a centred principal point at (S - 1) / 2
        params.intrinsic = o3d.camera.PinholeCameraIntrinsic(S, S, f, f, S / 2.0 - 0.5, S / 2.0 - 0.5)
        rot = np.stack([basis[0], -basis[1], -basis[2]])              # OpenCV: x right, y down, z forward
        ext = np.eye(4)
        ext[:3, :3] = rot
        ext[:3, 3] = -rot @ np.asarray(eye, np.float64)
        params.extrinsic = ext
        if not vis.get_view_control().convert_from_pinhole_camera_parameters(params, allow_arbitrary=True):
            raise PcganError("Open3D rejected the camera (legacy view control)")
        buf = np.asarray(vis.capture_screen_float_buffer(do_render=True))
        return _to_u8(buf)

    def close(self) -> None:
        self.vis.destroy_window()


class FilamentBackend:
    """Open3D's OffscreenRenderer (Filament over Vulkan or EGL)."""

    name = "filament"

    def __init__(self, size: int):
        o3d = _import_open3d()
        self.size = size
        chatter: list[str] = []
        try:
            with _captured_output(chatter):
                self.renderer = o3d.visualization.rendering.OffscreenRenderer(size, size)
                self.renderer.scene.view.set_post_processing(False)   # no tone mapping: true colours
                self.renderer.render_to_image()    # Filament logs its start-up from its threads by the first frame
        except RuntimeError as exc:
            hint = syslibs.hint("filament")
            raise BackendUnavailable(f"Open3D's OffscreenRenderer failed ({exc})" + (f"; {hint}" if hint else "")) from None
        finally:
            if chatter:
                log.debug("filament start-up output: %s", chatter[0].strip())
        self._o3d = o3d

    def draw(self, item: Item, colors, eye, target, fov_deg: float, point_size: int, background) -> np.ndarray:
        rendering = self._o3d.visualization.rendering
        scene = self.renderer.scene
        scene.clear_geometry()
        mat = rendering.MaterialRecord()
        mat.shader = "defaultUnlit"
        mat.point_size = float(point_size)
        scene.add_geometry("item", _o3d_geometry(item, colors), mat)
        # Filament takes the background as sRGB and writes it linearised when post-processing is
        # off; encode it so the stored bytes come out as given.
        scene.set_background(list(_linear_to_srgb(np.asarray(background, np.float64) / 255.0)) + [1.0])
        self.renderer.setup_camera(float(fov_deg), np.asarray(target, np.float32),
                                   np.asarray(eye, np.float32), np.array([0, 1, 0], np.float32))
        return np.asarray(self.renderer.render_to_image())[..., :3].copy()

    def close(self) -> None:
        del self.renderer


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


def _o3d_geometry(item: Item, colors):
    from viewers.loading import to_open3d

    return to_open3d(item, colors)


def _probe_filament_in_child(timeout: float = 120.0) -> str | None:
    """Start an OffscreenRenderer in a child process; None when it works, else why not."""
    code = ("import open3d as o3d, numpy as np\n"
            "r = o3d.visualization.rendering.OffscreenRenderer(16, 16)\n"
            "assert np.asarray(r.render_to_image()).shape[:2] == (16, 16)\n")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"a test render did not finish in {timeout:.0f} s"
    if res.returncode == 0:
        return None
    tail = (res.stderr or res.stdout).decode("utf-8", "replace").strip().splitlines()
    return f"a test render failed (exit {res.returncode}: {tail[-1] if tail else 'no output'})"


_FACTORIES: dict[str, Callable[[int], object]] = {
    "egl": LegacyEGLBackend, "filament": FilamentBackend, "numpy": NumpyBackend,
}
_LIVE: dict[str, object] = {}            # name -> the started backend (one per name, latest size)
_UNAVAILABLE: dict[str, str] = {}        # name -> why it could not start (not retried in this process)


def get_backend(name: str = "auto", size: int = DEFAULT_SIZE):
    """A started backend drawing ``size x size`` pictures. ``auto`` tries ``egl``, ``filament``
    and ``numpy`` in turn. Started backends are kept for reuse (a GL context costs ~1 s).
    Raises PcganError when the named backend cannot start, with the reason and the apt
    packages that would fix it."""
    if name not in BACKENDS:
        raise PcganError(f"render backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if size < 8 or size > 8192:
        raise PcganError(f"picture size {size}: use 8 to 8192 pixels")
    names = AUTO_ORDER if name == "auto" else (name,)
    reasons = []
    for n in names:
        live = _LIVE.get(n)
        if live is not None and live.size == size:
            return live
        if n in _UNAVAILABLE:
            reasons.append(f"{n}: {_UNAVAILABLE[n]}")
            continue
        if n == "egl" and "filament" in _LIVE:
            # Filament starts GLFW headless, after which the legacy window cannot open.
            reasons.append("egl: cannot start in a process that already uses the filament backend")
            continue
        try:
            if n == "filament" and "filament" not in _LIVE:
                _import_open3d()                  # no Open3D: say so without a child process
                why = _probe_filament_in_child()
                if why is not None:
                    hint = syslibs.hint("filament")
                    raise BackendUnavailable(why + (f"; {hint}" if hint else ""))
            if live is not None:
                live.close()
                _LIVE.pop(n)
            backend = _FACTORIES[n](size)
        except BackendUnavailable as exc:
            _UNAVAILABLE[n] = str(exc)
            reasons.append(f"{n}: {exc}")
            log.debug("render backend %s unavailable: %s", n, exc)
            continue
        _LIVE[n] = backend
        if any("apt-get" in r for r in reasons):     # fixable by installing packages: say so
            log.warning("rendering with %s; %s", n, "; ".join(reasons))
        elif reasons:
            log.debug("rendering with %s (%s)", n, "; ".join(reasons))
        else:
            log.debug("rendering with %s", n)
        return backend
    raise PcganError(f"render backend {name} cannot start: {'; '.join(reasons)}")


def close_backends() -> None:
    """Release every started backend (GL contexts, windows)."""
    for backend in _LIVE.values():
        backend.close()
    _LIVE.clear()


# ---------------------------------------------------------------------------------------------
# Rendering


def _to_u8(x) -> np.ndarray:
    return np.rint(np.clip(np.asarray(x, np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def parse_color(text: str | Sequence) -> tuple[int, int, int]:
    """``"white"``, ``"#202020"``, ``"32,32,32"`` or a 3-sequence of 0-255 -> (r, g, b)."""
    named = {"white": (255, 255, 255), "black": (0, 0, 0), "grey": BACKGROUND, "gray": BACKGROUND}
    if not isinstance(text, str):
        vals = tuple(int(v) for v in text)
    elif text.lower() in named:
        return named[text.lower()]
    elif text.startswith("#") and len(text) == 7:
        try:
            vals = tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
        except ValueError:
            vals = ()
    else:
        try:
            vals = tuple(int(v) for v in text.split(","))
        except ValueError:
            vals = ()
    if len(vals) != 3 or not all(0 <= v <= 255 for v in vals):
        raise PcganError(f"colour {text!r}: use white, black, grey, #rrggbb or r,g,b (0-255)")
    return vals


def render_item(item: Item, yaws: Sequence[float], size: int = DEFAULT_SIZE, mode: str = "color",
                backend="auto", point_size: int | None = None, background=BACKGROUND) -> np.ndarray:
    """Pictures of one item from the given yaws: ``uint8 [V, size, size, 3]``.

    ``backend``: a name (see :func:`get_backend`) or a started backend. ``point_size``: splat
    side in pixels; None picks it from the item's point spacing (:func:`auto_point_size`)."""
    be = get_backend(backend, size) if isinstance(backend, str) else backend
    ps = auto_point_size(item, size) if point_size is None else int(point_size)
    out = np.empty((len(yaws), size, size, 3), np.uint8)
    for k, yaw in enumerate(yaws):
        eye, target = camera_pose(item.framing, yaw)
        colors = point_colors(item, mode, eye, target)
        out[k] = be.draw(item, colors, eye, target, item.framing.fov_deg, ps, background)
    return out


def as_items(source, meta: GridMeta | None = None, names: Sequence[str] | None = None,
             grid_as: str = "points") -> list[Item]:
    """Items from an Item, a list of Items, or grids ``[C, H, W]`` / ``[B, C, H, W]`` (numpy or
    torch; ``meta`` required; drawn as ``grid_as`` "points" or "mesh"). A grid with no surface
    pixels raises PcganError."""
    if isinstance(source, Item):
        return [source]
    if isinstance(source, (list, tuple)) and source and all(isinstance(s, Item) for s in source):
        return list(source)
    if meta is None:
        raise PcganError("render_views of grids needs their GridMeta (meta=...)")
    try:
        import torch

        if isinstance(source, torch.Tensor):
            source = source.detach().to("cpu", torch.float32).numpy()
    except ImportError:
        pass
    grids = np.asarray(source, np.float32)
    if grids.ndim == 3:
        grids = grids[None]
    if grids.ndim != 4:
        raise PcganError(f"grids have shape {list(grids.shape)}; expected [C, H, W] or [B, C, H, W]")
    names = list(names) if names is not None else [f"{b}" for b in range(len(grids))]
    return [grid_item(g, meta, n, as_mesh=grid_as == "mesh") for g, n in zip(grids, names)]


def render_views(source, meta: GridMeta | None = None, views: str | Sequence = ("front",),
                 size: int = DEFAULT_SIZE, mode: str = "color", backend: str = "auto",
                 point_size: int | None = None, background=BACKGROUND, grid_as: str = "points") -> np.ndarray:
    """Render grids or items from several views: ``uint8 [B, V, size, size, 3]``.

    Args:
        source: grids ``[B, C, H, W]`` / ``[C, H, W]`` (numpy or torch, with ``meta``), an
            :class:`~viewers.loading.Item` or a list of them.
        meta: the grids' GridMeta (camera and channels); grids are drawn in their normalised
            canonical frame from their canonical camera.
        views: names (front, left, right) or yaw degrees, as a list or ``"front,left"``.
        size: picture side in pixels.
        mode: color, lit, shade or depth (see :func:`viewers.loading.point_colors`).
        backend: auto, egl, filament or numpy.
        point_size: splat side in pixels; None: from the point spacing.
        background: (r, g, b) 0-255.
        grid_as: draw grids as their surface "points" or as the grid-connectivity "mesh"
            (smooth in turned views).
    """
    items = as_items(source, meta, grid_as=grid_as)
    yaws = [yaw for _, yaw in parse_views(views)]
    be = get_backend(backend, size)
    return np.stack([render_item(it, yaws, size, mode, be, point_size, background) for it in items])


# ---------------------------------------------------------------------------------------------
# Sheets and files


def label_image(img: np.ndarray, text: str) -> np.ndarray:
    """``img`` with ``text`` in its top-left corner on a dark box (Pillow's default font)."""
    if not text:
        return img
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    x0, y0, x1, y1 = draw.textbbox((3, 2), text)
    draw.rectangle((0, 0, min(x1 + 3, im.width), min(y1 + 3, im.height)), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(235, 235, 235))
    return np.asarray(im)


def sheet_layout(n: int, cell_h: int, cell_w: int, cols: int | None = None,
                 pad: int = SHEET_PAD) -> tuple[int, int, list[tuple[int, int]]]:
    """Where ``n`` cells of ``cell_h x cell_w`` go on a sheet of ``cols`` columns (default:
    nearly square), ``pad`` pixels apart: (sheet height, sheet width, [(top, left), ...])."""
    cols = max(1, min(n, cols or math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    corners = [((k // cols) * (cell_h + pad), (k % cols) * (cell_w + pad)) for k in range(n)]
    return rows * cell_h + (rows - 1) * pad, cols * cell_w + (cols - 1) * pad, corners


def tile(images: Sequence[np.ndarray], cols: int | None = None, pad: int = SHEET_PAD,
         background=BACKGROUND) -> np.ndarray:
    """Lay equally sized ``uint8 [h, w, 3]`` images in a grid of ``cols`` columns (default:
    nearly square) with ``pad`` pixels between them: ``uint8 [H, W, 3]``."""
    if not len(images):
        raise PcganError("nothing to put on a contact sheet")
    h, w = images[0].shape[:2]
    if any(im.shape[:2] != (h, w) for im in images):
        raise PcganError("contact sheet cells must have one size")
    H, W, corners = sheet_layout(len(images), h, w, cols, pad)
    sheet = np.empty((H, W, 3), np.uint8)
    sheet[:] = np.asarray(background, np.uint8)
    for im, (top, left) in zip(images, corners):
        sheet[top:top + h, left:left + w] = im
    return sheet


def contact_sheet(pictures: np.ndarray, labels: Sequence[str] | None = None, cols: int | None = None,
                  pad: int = SHEET_PAD, background=BACKGROUND) -> np.ndarray:
    """One picture of many: ``pictures uint8 [B, V, S, S, 3]`` (items x views) ->
    ``uint8 [H, W, 3]``. Each item's views sit side by side in one cell, labelled with
    ``labels[b]``; cells fill ``cols`` columns (default: one column when there are several
    views, else nearly square)."""
    pictures = np.asarray(pictures)
    if pictures.ndim != 5 or pictures.shape[-1] != 3:
        raise PcganError(f"contact_sheet takes pictures [B, V, S, S, 3], got {list(pictures.shape)}")
    B, V = pictures.shape[:2]
    cells = []
    for b in range(B):
        cell = np.concatenate(list(pictures[b]), axis=1) if V > 1 else pictures[b, 0]
        cells.append(label_image(cell, labels[b] if labels else ""))
    if cols is None and V > 1:
        cols = 1
    return tile(cells, cols, pad, background)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write ``uint8 [H, W, 3]`` as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(image, np.uint8)).save(tmp, format="PNG")   # zlib 6: optimize=True costs 6x for ~1%
    return path


def write_gif(path: str | Path, frames: Iterable[np.ndarray], fps: float = 12.0) -> Path:
    """Write ``uint8 [H, W, 3]`` frames as a looping GIF, atomically. All frames share one
    256-colour palette (taken from a mosaic of frames), so colours do not flicker."""
    frames = [np.asarray(f, np.uint8) for f in frames]
    if not frames:
        raise PcganError(f"{path}: no frames to write")
    step = max(1, len(frames) // 8)
    mosaic = Image.fromarray(np.concatenate(frames[::step], axis=0))
    palette = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in frames]
    path = Path(path)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                       duration=int(round(1000.0 / fps)), optimize=False, disposal=1)
    return path
