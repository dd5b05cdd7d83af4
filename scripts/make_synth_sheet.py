#!/usr/bin/env python
"""Render a contact sheet of built-in synthetic faces: docs/images/synth_faces.png.

Writes faces with `pcgan synth-faces` (so the picture shows what users get), reads the files
back with Open3D (.ply vertex colours and .obj textures alike) and renders each from a frontal
camera with Open3D's RaycastingScene: Lambert shading times colour. No window is opened.

    .venv/bin/python scripts/make_synth_sheet.py                      # 16 procedural faces
    .venv/bin/python scripts/make_synth_sheet.py --n 8 --ict ../shared/realdata/faces/ict_facekit/ict_facemodel.npz \
        --out docs/images/synth_faces_ict.png
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def load_mesh(path: Path):
    """(vertices [V,3], triangles [F,3], corner colour function) from a .ply or .obj via Open3D."""
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    v = np.asarray(mesh.vertices, dtype=np.float64)
    f = np.asarray(mesh.triangles, dtype=np.int64)
    textures = [np.asarray(t) for t in mesh.textures]
    if mesh.has_triangle_uvs() and any(t.size for t in textures):
        # Open3D keeps an empty texture 0 (triangles point at theirs through material ids) and
        # flips OBJ images on load, so row = v * H here (the PNG itself has v = 0 at the bottom).
        mat = np.asarray(mesh.triangle_material_ids)
        tex = textures[int(np.bincount(mat).argmax())].astype(np.float64)[..., :3] / 255.0   # [H, W, 3]
        uv = np.asarray(mesh.triangle_uvs).reshape(-1, 3, 2)                                 # [F, 3, 2]

        def colour(tri, b):                                                                   # b [N, 3]
            st = (uv[tri] * b[:, :, None]).sum(1)
            h, w = tex.shape[:2]
            col = np.clip((st[:, 0] * w).astype(int), 0, w - 1)
            row = np.clip((st[:, 1] * h).astype(int), 0, h - 1)
            return tex[row, col]
    else:
        vc = np.asarray(mesh.vertex_colors, dtype=np.float64)

        def colour(tri, b):
            return (vc[f[tri]] * b[:, :, None]).sum(1)
    return v, f, colour


def render(vertices, triangles, colour, size: int = 256, fov_deg: float = 22.0, yaw_deg: float = 0.0,
           background=(1.0, 1.0, 1.0), box=None) -> np.ndarray:
    """Frontal render ``[size, size, 3]`` float in [0, 1]. The camera looks along -z at the
    centre of ``box`` (lo, hi corners; default the bounding box), from far enough to fit it;
    ``yaw_deg`` turns the camera about y."""
    import open3d as o3d

    v = np.asarray(vertices, np.float64)
    lo, hi = (v.min(0), v.max(0)) if box is None else (np.asarray(box[0]), np.asarray(box[1]))
    center = (lo + hi) / 2
    extent = max(hi[0] - lo[0], hi[1] - lo[1]) * 1.08
    dist = extent / 2 / np.tan(np.radians(fov_deg) / 2) + (hi[2] - lo[2]) / 2
    yaw = np.radians(yaw_deg)
    fwd = np.array([-np.sin(yaw), 0.0, -np.cos(yaw)])
    eye = center - dist * fwd
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    c = (np.arange(size) + 0.5) / size * 2 - 1
    px, py = np.meshgrid(c, -c, indexing="xy")
    t = np.tan(np.radians(fov_deg) / 2)
    dirs = fwd + (px[..., None] * right + py[..., None] * up) * t
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    rays = np.concatenate([np.broadcast_to(eye, dirs.shape), dirs], -1).astype(np.float32)

    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(v.astype(np.float32), np.asarray(triangles, np.uint32))
    hit = scene.cast_rays(o3d.core.Tensor(rays.reshape(-1, 6)))
    ok = np.isfinite(hit["t_hit"].numpy())
    tri = hit["primitive_ids"].numpy()[ok].astype(np.int64)
    buv = hit["primitive_uvs"].numpy()[ok]
    b = np.stack([1 - buv[:, 0] - buv[:, 1], buv[:, 0], buv[:, 1]], -1)          # [N, 3]

    # Smooth shading: area-weighted vertex normals, interpolated.
    f = np.asarray(triangles, np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    vn = np.zeros_like(v)
    for k in range(3):
        np.add.at(vn, f[:, k], fn)
    vn /= np.linalg.norm(vn, axis=1, keepdims=True) + 1e-12
    n = (vn[f[tri]] * b[:, :, None]).sum(1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    view = -dirs.reshape(-1, 3)[ok]
    n = np.where(((n * view).sum(1) < 0)[:, None], -n, n)
    key = np.array([-0.35, 0.45, 0.82])
    key = key[0] * right + key[1] * up - key[2] * fwd
    fill = -fwd
    shade = 0.18 + 0.62 * np.clip(n @ key, 0, 1) + 0.25 * np.clip(n @ fill, 0, 1)
    img = np.tile(np.asarray(background, np.float64), (size * size, 1))
    img[ok] = np.clip(colour(tri, b) * shade[:, None], 0, 1)
    return img.reshape(size, size, 3)


def sheet(images, cols: int) -> np.ndarray:
    rows = (len(images) + cols - 1) // cols
    h, w = images[0].shape[:2]
    out = np.ones((rows * h, cols * w, 3))
    for i, im in enumerate(images):
        out[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] = im
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)                        # faces on the sheet
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--size", type=int, default=192)                    # pixels per face
    ap.add_argument("--ict", default=None)                              # ICT npz/folder: use the ICT shape source
    ap.add_argument("--side", action="store_true")                      # add a 3/4 view of each face
    ap.add_argument("--out", default=str(REPO / "docs" / "images" / "synth_faces.png"))
    args = ap.parse_args(argv)

    from pcgan.cli import main as pcgan_main

    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["synth-faces", "--n", str(args.n), "--out", tmp, "--seed", str(args.seed)]
        if args.ict:
            cmd += ["--shape-model", "ict", args.ict]
        if pcgan_main(cmd) != 0:
            return 1
        images = []
        for path in sorted(Path(tmp).glob("face_*.*")):
            if path.suffix not in (".ply", ".obj"):
                continue
            v, f, colour = load_mesh(path)
            images.append(render(v, f, colour, args.size))
            if args.side:
                images.append(render(v, f, colour, args.size, yaw_deg=40.0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((sheet(images, args.cols) * 255 + 0.5).astype(np.uint8)).save(out, optimize=True)
    print(f"wrote {out} ({len(images)} renders)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
