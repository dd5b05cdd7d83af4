"""Make docs/images/preprocess_canonical.png: what `pcgan preprocess` canonicalisation does.

Each row is one procedural face (``data_tools.synth_faces``) turned by a random rotation, as a
scanner in an unknown pose would deliver it. Columns: the scan seen by the canonical camera
as it comes (``--orient none``, only centred and scaled) | after ``--orient auto`` (mirror
plane + nose + nasion/width cues) as the grid's colour | depth (near = bright) | normals.

    python scripts/make_canonical_figure.py [--rows 4] [--out docs/images/preprocess_canonical.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_tools.canonical import CanonOptions, canonicalise, sample_surface  # noqa: E402
from data_tools.dataset_cli import _tiles  # noqa: E402
from data_tools.meshes import MeshScan  # noqa: E402
from data_tools.render import render_mesh  # noqa: E402
from data_tools.synth_faces import make_face, sample_params  # noqa: E402
from pcgan.grid import GridMeta  # noqa: E402


def random_rotation(seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "preprocess_canonical.png"))
    args = ap.parse_args()

    rows = []
    for i in range(args.rows):
        face = make_face(sample_params(np.random.default_rng([3, i])), resolution=90)
        R = random_rotation(100 + i)
        mesh = MeshScan(Path(f"face{i}"), face.vertices.astype(np.float64) @ R.T, face.faces.astype(np.int64),
                        vertex_colors=face.colors.astype(np.float32))
        pts = sample_surface(mesh.vertices, mesh.triangles)
        tiles = []
        for orient in ("none", "auto"):
            T, extent, _ = canonicalise(pts, CanonOptions(orient=orient))
            meta = GridMeta(resolution=args.res, scale=extent, units="mm")
            N = np.diag([1 / extent] * 3 + [1.0])
            grid, _ = render_mesh(mesh, N @ T, meta)
            t = _tiles(grid, meta)
            tiles += t[:1] if orient == "none" else t
        gap = np.full((args.res, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], gap, gap, gap] + sum(([t, gap] for t in tiles[1:]), [])[:-1], axis=1))
    hgap = np.full((4, rows[0].shape[1], 3), 255, np.uint8)
    sheet = np.concatenate(sum(([r, hgap] for r in rows), [])[:-1], axis=0)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
