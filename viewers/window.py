"""The interactive viewer: an Open3D window with keys for colouring, point size, camera, screenshots.

Built on Open3D's legacy ``VisualizerWithKeyCallback``. Several items sit side by side
(``layout="row"``) or in a near-square grid (``layout="grid"``), each moved sideways by whole
bounding-box widths; the camera starts frontal on them (looking along -z, +y up, +x to the
right; a single grid is seen exactly from its canonical camera).

Keys (:data:`KEYS`): C colour as stored, L lit (colour x light), N normal shading (grey, lit),
D depth colouring, + / - point size, R reset the camera to frontal, S screenshot, H help.
Mouse: Open3D's own (drag to rotate, shift/ctrl-drag to pan/roll, wheel to zoom). Q / Esc quit.

:func:`build_viewer` makes the geometries and the key-callback table without opening a
window, so tests call the callbacks on any object with the Visualizer's methods;
:func:`run_viewer` opens the window (after :func:`check_display`) and enters its event loop.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pcgan.errors import PcganError
from viewers.loading import Framing, Item, depth_colors, frame_points, to_open3d, translated, view_basis
from viewers.render import auto_point_size, camera_pose, focal_px

log = logging.getLogger(__name__)

LAYOUTS = ("row", "grid")
LAYOUT_GAP = 0.15               # gap between items, as a fraction of the widest bounding box
SHADE_GREY = (0.8, 0.8, 0.8)    # surface colour in normal-shading mode (light on)
POINT_SIZE_RANGE = (1.0, 25.0)  # the legacy renderer's point size limits, pixels

# GLFW key codes: letters are their upper-case ASCII codes.
_KEY_PLUS = (ord("="), 334)     # '=' (the '+' key without shift) and keypad '+'
_KEY_MINUS = (ord("-"), 333)    # '-' and keypad '-'

# (key label, action) in help order; the table in build_viewer binds the same keys.
KEYS: tuple[tuple[str, str], ...] = (
    ("C", "colour as stored"),
    ("L", "lit: colour with the light on"),
    ("N", "normal shading: grey surface, light on (the geometry alone)"),
    ("D", "depth colouring: viridis over the distance, near = yellow"),
    ("+ / -", "bigger / smaller points"),
    ("R", "reset the camera: frontal on the face"),
    ("S", "save a screenshot (pcgan-view-NNN.png in --screenshot-dir)"),
    ("H", "print these keys"),
    ("Q / Esc", "quit"),
)
MODE_KEYS = {"C": "color", "L": "lit", "N": "shade", "D": "depth"}


def keys_help() -> str:
    return "\n".join(f"  {k:<9} {what}" for k, what in KEYS)


def check_display(environ=None, platform: str | None = None, inputs: Sequence[str] = ()) -> None:
    """Raise PcganError when no window can open (Linux without DISPLAY / WAYLAND_DISPLAY).

    The message suggests the ``pcgan render`` command for ``inputs``."""
    environ = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    if platform.startswith("linux") and not (environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY")):
        files = " ".join(str(p) for p in inputs[:3]) + (" ..." if len(inputs) > 3 else "") if inputs else "FILE..."
        raise PcganError(f"no display (DISPLAY and WAYLAND_DISPLAY are unset), so no window can open; "
                         f"on a headless machine make pictures instead: "
                         f"`pcgan render {files} --out view.png` (or --out turntable.gif --turntable 36)")


def layout_items(items: Sequence[Item], layout: str = "row") -> list[Item]:
    """Copies of ``items`` moved so they sit side by side: one row, or a near-square grid read
    left to right, top to bottom. Each item is centred on its own cell; cells are as wide as
    the widest item plus a gap."""
    if layout not in LAYOUTS:
        raise PcganError(f"layout {layout!r}: use one of {', '.join(LAYOUTS)}")
    if len(items) <= 1:
        return list(items)
    boxes = [(it.points.min(0), it.points.max(0)) for it in items]
    width = max(float(hi[0] - lo[0]) for lo, hi in boxes) * (1 + LAYOUT_GAP)
    height = max(float(hi[1] - lo[1]) for lo, hi in boxes) * (1 + LAYOUT_GAP)
    cols = len(items) if layout == "row" else math.ceil(math.sqrt(len(items)))
    out = []
    for k, (it, (lo, hi)) in enumerate(zip(items, boxes)):
        r, c = divmod(k, cols)
        centre = (lo + hi) / 2.0
        cell = np.array([c * width, -r * height, 0.0])
        out.append(translated(it, cell - np.array([centre[0], centre[1], 0.0])))
    return out


def scene_framing(items: Sequence[Item]) -> Framing:
    """The frontal camera for all items together (a lone item keeps its own framing, so a
    grid is seen from its canonical camera)."""
    if len(items) == 1:
        return items[0].framing
    pts = np.concatenate([np.stack([it.points.min(0), it.points.max(0)]) for it in items])
    return frame_points(pts, fov_deg=items[0].framing.fov_deg)


@dataclass
class ViewerState:
    """What the key callbacks change. ``geometries[i]`` shows ``items[i]``."""

    items: list[Item]
    geometries: list                      # Open3D PointCloud / TriangleMesh, one per item
    framing: Framing                      # the frontal camera of the whole scene
    mode: str = "color"                   # color | lit | shade | depth
    point_size: float = 3.0               # pixels
    screenshot_dir: Path = Path(".")
    screenshots: list[Path] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)   # what the last keys did, for tests and the console

    def colors(self, item: Item, mode: str) -> np.ndarray:
        if mode == "shade" or (mode in ("color", "lit") and item.colors is None):
            return np.tile(np.asarray(SHADE_GREY, np.float32), (len(item.points), 1))
        if mode == "depth":
            eye, target = camera_pose(self.framing, 0.0)
            axis = view_basis(eye, target)[2]
            return depth_colors((np.asarray(eye) - item.points.astype(np.float64)) @ axis)
        return item.colors

    # --- actions: each takes the visualizer and returns True when the picture must be redrawn

    def set_mode(self, vis, mode: str) -> bool:
        self.mode = mode
        for item, geom in zip(self.items, self.geometries):
            cols = np.asarray(self.colors(item, mode), np.float64)
            if item.is_mesh:
                geom.vertex_colors = _vec3(cols)
            else:
                geom.colors = _vec3(cols)
            vis.update_geometry(geom)
        opt = vis.get_render_option()
        opt.light_on = mode in ("lit", "shade")
        self.messages.append(f"mode: {mode}")
        return True

    def change_point_size(self, vis, factor: float) -> bool:
        lo, hi = POINT_SIZE_RANGE
        self.point_size = float(min(hi, max(lo, round(self.point_size * factor, 2))))
        vis.get_render_option().point_size = self.point_size
        self.messages.append(f"point size: {self.point_size:g}")
        return True

    def reset_camera(self, vis) -> bool:
        """Frontal on the scene: the framing's camera, at the window's size."""
        import open3d as o3d

        vc = vis.get_view_control()
        params = vc.convert_to_pinhole_camera_parameters()
        w, h = params.intrinsic.width, params.intrinsic.height
        f = focal_px(self.framing.fov_deg, min(w, h))
        params.intrinsic = o3d.camera.PinholeCameraIntrinsic(w, h, f, f, w / 2.0 - 0.5, h / 2.0 - 0.5)
        eye, target = camera_pose(self.framing, 0.0)
        basis = view_basis(eye, target)
        rot = np.stack([basis[0], -basis[1], -basis[2]])       # OpenCV camera: x right, y down, z forward
        ext = np.eye(4)
        ext[:3, :3] = rot
        ext[:3, 3] = -rot @ eye
        params.extrinsic = ext
        ok = vc.convert_from_pinhole_camera_parameters(params, allow_arbitrary=True)
        self.messages.append("camera: frontal" if ok else "camera: Open3D refused the frontal camera")
        return True

    def screenshot(self, vis) -> bool:
        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        k = 0
        while (path := self.screenshot_dir / f"pcgan-view-{k:03d}.png").exists():
            k += 1
        vis.capture_screen_image(str(path), do_render=True)
        self.screenshots.append(path)
        self.messages.append(f"saved {path}")
        log.info("saved %s", path)
        return False

    def print_help(self, vis) -> bool:
        self.messages.append("keys:\n" + keys_help())
        log.info("pcgan view keys:\n%s", keys_help())
        return False


def _vec3(a: np.ndarray):
    import open3d as o3d

    return o3d.utility.Vector3dVector(np.ascontiguousarray(a, dtype=np.float64))


def build_viewer(items: Sequence[Item], layout: str = "row", mode: str = "color",
                 point_size: float | None = None, window_size: int = 800,
                 screenshot_dir: str | Path = ".") -> tuple[ViewerState, dict[int, Callable]]:
    """The scene and its key table, without a window.

    Returns (state, callbacks) where ``callbacks`` maps GLFW key codes to functions
    ``f(vis) -> bool`` (True: redraw), ready for ``register_key_callback``. Normals are
    estimated for items without them, so lit and shaded modes work on any cloud."""
    if not items:
        raise PcganError("nothing to show")
    placed = layout_items(items, layout)
    for it in placed:
        it.ensure_normals()
    geometries = [to_open3d(it) for it in placed]
    framing = scene_framing(placed)
    if point_size is None:
        # the splat that closes gaps in the first item at the window's size
        point_size = float(auto_point_size(placed[0], window_size) if len(placed) == 1 else
                           max(1, min(auto_point_size(it, window_size) for it in placed)))
    state = ViewerState(placed, geometries, framing, mode, float(point_size), Path(screenshot_dir))
    callbacks: dict[int, Callable] = {}
    for key, m in MODE_KEYS.items():
        callbacks[ord(key)] = lambda vis, m=m: state.set_mode(vis, m)
    for code in _KEY_PLUS:
        callbacks[code] = lambda vis: state.change_point_size(vis, 1.25)
    for code in _KEY_MINUS:
        callbacks[code] = lambda vis: state.change_point_size(vis, 0.8)
    callbacks[ord("R")] = state.reset_camera
    callbacks[ord("S")] = state.screenshot
    callbacks[ord("H")] = state.print_help
    return state, callbacks


def prepare(vis, state: ViewerState, callbacks: dict[int, Callable]) -> None:
    """Put the scene into a created visualizer: geometries, options, keys, frontal camera."""
    for geom in state.geometries:
        vis.add_geometry(geom)
    opt = vis.get_render_option()
    opt.point_size = state.point_size
    opt.mesh_show_back_face = True
    opt.background_color = np.array([24, 24, 24], np.float64) / 255.0
    for code, fn in callbacks.items():
        vis.register_key_callback(code, fn)
    state.set_mode(vis, state.mode)
    state.reset_camera(vis)


def run_viewer(items: Sequence[Item], layout: str = "row", mode: str = "color", point_size: float | None = None,
               width: int = 1280, height: int = 800, screenshot_dir: str | Path = ".") -> None:
    """Open the window and run until it is closed."""
    check_display()
    from viewers.render import _import_open3d, BackendUnavailable

    try:
        o3d = _import_open3d()
    except BackendUnavailable as exc:
        raise PcganError(str(exc)) from None
    state, callbacks = build_viewer(items, layout, mode, point_size, min(width, height), screenshot_dir)
    vis = o3d.visualization.VisualizerWithKeyCallback()
    title = "pcgan view: " + ", ".join(it.name for it in items[:4]) + (" ..." if len(items) > 4 else "")
    if not vis.create_window(window_name=title, width=width, height=height):
        from viewers import syslibs

        hint = syslibs.hint("egl") or syslibs.hint("open3d")
        raise PcganError("Open3D could not open a window" + (f"; {hint}" if hint else
                         "; for pictures without a window use `pcgan render FILE... --out view.png`"))
    try:
        prepare(vis, state, callbacks)
        log.info("pcgan view: press H for keys")
        vis.run()
    finally:
        vis.destroy_window()
