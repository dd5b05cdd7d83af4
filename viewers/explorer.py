"""The latent explorer: a trained generator in an Open3D GUI window.

Controls: seed, truncation psi, a second seed mixed in from a crossover layer (styles before
the crossover come from the first seed, from it on from the second: low crossovers keep only
the first face's coarse shape, high ones most of it), colour mode, and a button that saves the
face on screen as a .ply point cloud in the scans' units. Every change regenerates the face
(in a worker thread; the newest request wins).

The model logic is plain functions (:func:`generate_grid`, :func:`generate_item`,
:func:`save_face`) tested without a window; :class:`Explorer` only wires them to
``open3d.visualization.gui`` widgets. Noise is constant (``noise_mode="const"``), so a
setting always shows the same face.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pcgan.errors import PcganError
from pcgan.grid import GridMeta
from viewers.loading import COLOR_MODES, Item, grid_item, point_colors

log = logging.getLogger(__name__)

PSI_RANGE = (0.0, 1.5)          # truncation slider limits: 0 = the average face, 1 = untruncated
MAX_SEED = 2**31 - 1


@dataclass(frozen=True)
class LatentChoice:
    """One face: a seed, truncation, and optionally a second seed mixed in."""

    seed: int                       # latent z of the face (z_from_seeds)
    psi: float = 0.7                # truncation toward the average w (1 = none)
    seed2: int | None = None        # second face to mix in; None = no mixing
    crossover: int | None = None    # first style layer taken from seed2; None = no mixing

    @property
    def mixing(self) -> bool:
        return self.seed2 is not None and self.crossover is not None

    def label(self) -> str:
        """A file-name friendly name, e.g. ``seed0005_psi0.70_mix0012at4``."""
        text = f"seed{self.seed:04d}_psi{self.psi:.2f}"
        return text + (f"_mix{self.seed2:04d}at{self.crossover}" if self.mixing else "")


def check_choice(G, choice: LatentChoice) -> None:
    """PcganError naming the bad value when ``choice`` does not fit the generator."""
    for name, s in (("seed", choice.seed), ("seed2", choice.seed2)):
        if s is not None and not 0 <= s <= MAX_SEED:
            raise PcganError(f"{name} {s}: use 0 to {MAX_SEED}")
    if not PSI_RANGE[0] - 1.0 <= choice.psi <= PSI_RANGE[1] + 0.5:
        raise PcganError(f"truncation psi {choice.psi}: use about 0 to 1 (0 = average face, 1 = none)")
    if choice.crossover is not None and not 0 <= choice.crossover <= G.num_ws:
        raise PcganError(f"crossover {choice.crossover}: this generator has {G.num_ws} style layers, "
                         f"use 0 to {G.num_ws}")
    if getattr(G, "c_dim", 0):
        raise PcganError(f"this generator is conditional (c_dim={G.c_dim}); the explorer shows unconditional ones")


@torch.no_grad()
def generate_grid(G, choice: LatentChoice, device: torch.device | str = "cpu") -> torch.Tensor:
    """The grid ``[C, H, W]`` float32 (on the CPU) of one latent choice.

    Styles: ``mapping(z(seed))`` truncated by psi; when mixing, layers ``>= crossover`` come
    from ``mapping(z(seed2))`` (crossover 0: all from seed2; ``num_ws``: all from seed)."""
    from pcgan.networks import style_mix, z_from_seeds

    check_choice(G, choice)
    ws = G.mapping(z_from_seeds([choice.seed], G.z_dim, device), None, truncation_psi=choice.psi)   # [1, L, w_dim]
    if choice.mixing:
        ws2 = G.mapping(z_from_seeds([choice.seed2], G.z_dim, device), None, truncation_psi=choice.psi)
        ws = style_mix(ws, ws2, choice.crossover)
    return G.synthesis(ws, noise_mode="const")[0].float().cpu()                    # [C, H, W]


def generate_item(G, meta: GridMeta, choice: LatentChoice, device="cpu") -> tuple[torch.Tensor, Item]:
    """(grid [C, H, W], its :class:`~viewers.loading.Item`); PcganError when the face is empty."""
    grid = generate_grid(G, choice, device)
    return grid, grid_item(grid.numpy(), meta, choice.label())


def save_face(grid, meta: GridMeta, out_dir: str | Path, choice: LatentChoice) -> Path:
    """Write the face as ``OUT_DIR/<label>.ply`` (points in the scans' units, colours,
    normals; :func:`pcgan.export.export_grid`). Returns the path."""
    from pcgan.export import export_grid

    return export_grid(grid, meta, Path(out_dir) / choice.label(), formats=("ply",))["ply"]


# ---------------------------------------------------------------------------------------------
# The window


class Explorer:
    """The GUI. Construct after ``gui.Application.instance.initialize()``; run the app after."""

    PANEL_WIDTH_EM = 18

    def __init__(self, G, meta: GridMeta, choice: LatentChoice, out_dir: str | Path = ".",
                 device="cpu", mode: str = "color", width: int = 1280, height: int = 800):
        import open3d.visualization.gui as gui
        import open3d.visualization.rendering as rendering

        self.gui, self.rendering = gui, rendering
        self.G, self.meta, self.device, self.out_dir = G, meta, device, Path(out_dir)
        self.choice, self.mode = choice, mode
        self.grid: torch.Tensor | None = None
        self.item: Item | None = None
        self._want: LatentChoice | None = None
        self._wake = threading.Condition()
        self._camera_set = False

        self.window = gui.Application.instance.create_window("pcgan explorer", width, height)
        w = self.window
        em = w.theme.font_size
        self.scene = gui.SceneWidget()
        self.scene.scene = rendering.Open3DScene(w.renderer)
        self.scene.scene.set_background([24 / 255, 24 / 255, 24 / 255, 1.0])

        panel = gui.Vert(0.5 * em, gui.Margins(em, em, em, em))
        self.seed = gui.NumberEdit(gui.NumberEdit.INT)
        self.seed.set_limits(0, MAX_SEED)
        self.seed.int_value = choice.seed
        self.seed.set_on_value_changed(lambda v: self._changed())
        self.psi = gui.Slider(gui.Slider.DOUBLE)
        self.psi.set_limits(*PSI_RANGE)
        self.psi.double_value = choice.psi
        self.psi.set_on_value_changed(lambda v: self._changed())
        self.mix = gui.Checkbox("mix in a second seed")
        self.mix.checked = choice.mixing
        self.mix.set_on_checked(lambda v: self._changed())
        self.seed2 = gui.NumberEdit(gui.NumberEdit.INT)
        self.seed2.set_limits(0, MAX_SEED)
        self.seed2.int_value = choice.seed2 if choice.seed2 is not None else choice.seed + 1
        self.seed2.set_on_value_changed(lambda v: self._changed())
        self.crossover = gui.Slider(gui.Slider.INT)
        self.crossover.set_limits(0, G.num_ws)
        self.crossover.int_value = choice.crossover if choice.crossover is not None else G.num_ws // 2
        self.crossover.set_on_value_changed(lambda v: self._changed())
        self.colour = gui.Combobox()
        for m in COLOR_MODES:
            self.colour.add_item(m)
        self.colour.selected_text = mode
        self.colour.set_on_selection_changed(self._mode_changed)
        save = gui.Button("Save .ply")
        save.set_on_clicked(self._save)
        self.status = gui.Label("")

        for widget in (gui.Label("seed"), self.seed, gui.Label("truncation psi"), self.psi, self.mix,
                       gui.Label("second seed"), self.seed2,
                       gui.Label(f"crossover layer (0..{G.num_ws}: from it on, seed 2)"), self.crossover,
                       gui.Label("colour"), self.colour, save, self.status):
            panel.add_child(widget)
        self.panel = panel
        w.add_child(self.scene)
        w.add_child(panel)
        w.set_on_layout(self._layout)
        w.set_on_close(self._close)

        self._running = True
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        self._changed()

    # --- wiring

    def current_choice(self) -> LatentChoice:
        mixing = bool(self.mix.checked)
        return LatentChoice(int(self.seed.int_value), float(self.psi.double_value),
                            int(self.seed2.int_value) if mixing else None,
                            int(self.crossover.int_value) if mixing else None)

    def _layout(self, ctx) -> None:
        r = self.window.content_rect
        pw = self.PANEL_WIDTH_EM * self.window.theme.font_size
        self.scene.frame = self.gui.Rect(r.x, r.y, r.width - pw, r.height)
        self.panel.frame = self.gui.Rect(r.get_right() - pw, r.y, pw, r.height)

    def _changed(self) -> None:
        with self._wake:
            self._want = self.current_choice()
            self._wake.notify()
        self.status.text = "generating..."

    def _work(self) -> None:
        while True:
            with self._wake:
                while self._running and self._want is None:
                    self._wake.wait()
                if not self._running:
                    return
                choice, self._want = self._want, None
            try:
                grid, item = generate_item(self.G, self.meta, choice, self.device)
                result = (choice, grid, item, "")
            except PcganError as exc:
                result = (choice, None, None, str(exc))
            self.gui.Application.instance.post_to_main_thread(self.window, lambda r=result: self._show(*r))

    def _show(self, choice: LatentChoice, grid, item: Item | None, error: str) -> None:
        if error:
            self.status.text = error
            return
        self.choice, self.grid, self.item = choice, grid, item
        self._draw()
        self.status.text = f"{choice.label()}: {len(item.points)} points"

    def _draw(self) -> None:
        from viewers.loading import to_open3d
        from viewers.render import auto_point_size, camera_pose

        item = self.item
        eye, target = camera_pose(item.framing, 0.0)
        mat = self.rendering.MaterialRecord()
        mat.shader = "defaultUnlit"
        mat.point_size = float(auto_point_size(item, self.window.size.height))
        scene = self.scene.scene
        scene.clear_geometry()
        scene.add_geometry("face", to_open3d(item, point_colors(item, self.mode, eye, target)), mat)
        if not self._camera_set:      # frontal once; later faces keep the user's camera
            self.scene.setup_camera(item.framing.fov_deg, scene.bounding_box, np.asarray(target, np.float32))
            self.scene.look_at(np.asarray(target, np.float32), np.asarray(eye, np.float32),
                               np.array([0, 1, 0], np.float32))
            self._camera_set = True

    def _mode_changed(self, text: str, index: int) -> None:
        self.mode = text
        if self.item is not None:
            self._draw()

    def _save(self) -> None:
        if self.grid is None:
            return
        try:
            path = save_face(self.grid, self.meta, self.out_dir, self.choice)
            self.status.text = f"saved {path}"
            log.info("saved %s", path)
        except PcganError as exc:
            self.status.text = str(exc)

    def _close(self) -> bool:
        with self._wake:
            self._running = False
            self._wake.notify()
        return True


def run_explorer(ckpt: str | Path, choice: LatentChoice, out_dir: str | Path = ".", device="cpu",
                 mode: str = "color", width: int = 1280, height: int = 800) -> None:
    """Load the generator and run the explorer window until it is closed."""
    from pcgan.checkpoint import load_generator
    from viewers.window import check_display

    check_display()
    G, meta, info = load_generator(ckpt, device)
    if choice.seed2 is not None and choice.crossover is None:     # mixing asked, layer not: the middle
        choice = dataclasses.replace(choice, crossover=G.num_ws // 2)
    check_choice(G, choice)
    log.info("explorer: %s (kimg %.1f)", info["path"], info.get("kimg") or 0.0)
    from viewers.render import BackendUnavailable, _import_open3d

    try:
        o3d = _import_open3d()
    except BackendUnavailable as exc:
        raise PcganError(str(exc)) from None
    app = o3d.visualization.gui.Application.instance
    app.initialize()
    Explorer(G, meta, choice, out_dir, device, mode, width, height)
    app.run()
