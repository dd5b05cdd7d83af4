"""``pcgan synth-faces``: the built-in dataset, procedural coloured face scans as mesh files.

Writes ``face_000000.ply`` (binary, vertex colours) and, for every ``--obj-every``'th face,
``face_000003.obj`` + ``.mtl`` + ``.png`` texture, plus ``synth_faces.json`` with the seed,
the configuration and every face's parameters and landmarks, so the files go through the same
preprocessing as real scans. Face ``i`` of seed ``s`` uses ``numpy.random.default_rng([s, i])``.

The face model lives in :mod:`data_tools.procedural_face` (re-exported here) and the optional
realistic shape source in :mod:`data_tools.ict_model`. Library use::

    from data_tools.synth_faces import sample_params, make_face, write_face
    params = sample_params(np.random.default_rng([0, 3]))
    mesh = make_face(params)                   # FaceMesh: vertices [V,3] mm, faces [F,3], colors [V,3]
    write_face(mesh, "face.ply")               # or "face.obj" (+ .mtl + texture .png)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.procedural_face import (
    EXPRESSION_RANGES, HAIR_COLOURS, HAIR_STYLES, IRIS_COLOURS, LANDMARKS, P_OPEN, P_SMILE,
    POSE_RANGES, PROPORTIONS, SHAPE_RANGES, SKIN_TONES, ColourParams, ExpressionParams,
    FaceMesh, FaceParams, Pose, ShapeParams, apply_pose, compose_colours, face_texture,
    make_face, sample_colours, sample_params, sample_pose,
)
from pcgan.errors import PcganError

__all__ = [  # the command, the files, and the face model's API re-exported for one import
    "HELP", "EPILOG", "add_arguments", "run", "SynthConfig", "generate", "write_face", "write_ply",
    "write_obj", "FaceParams", "ShapeParams", "ExpressionParams", "ColourParams", "Pose", "FaceMesh",
    "sample_params", "sample_colours", "sample_pose", "make_face", "face_texture", "apply_pose",
    "compose_colours", "LANDMARKS", "SHAPE_RANGES", "EXPRESSION_RANGES",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Files


def write_ply(path, mesh: FaceMesh) -> None:
    """Binary little-endian .ply: x y z float32 (mm), red green blue uchar, triangles as
    ``uchar`` count + ``int`` indices (what plyfile, Open3D, trimesh and MeshLab read). Built
    with numpy record arrays: plyfile's per-face list handling is 10x slower here."""
    from pcgan.fileio import atomic_path

    v = np.empty(len(mesh.vertices), dtype=[("xyz", "<f4", (3,)), ("rgb", "u1", (3,))])
    v["xyz"] = mesh.vertices
    v["rgb"] = np.clip(np.rint(np.asarray(mesh.colors) * 255), 0, 255)
    f = np.empty(len(mesh.faces), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    f["n"] = 3
    f["idx"] = mesh.faces
    header = ("ply\nformat binary_little_endian 1.0\ncomment pcgan synth-faces, units mm\n"
              f"element vertex {len(v)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(f)}\nproperty list uchar int vertex_indices\nend_header\n")
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("ascii"))
            fh.write(v.tobytes())
            fh.write(f.tobytes())


def write_obj(path, mesh: FaceMesh, texture_size: int = 256) -> list[Path]:
    """.obj + .mtl + .png texture (per-vertex UVs, ``f v/vt``). Returns the three paths."""
    from PIL import Image

    from pcgan.fileio import atomic_path

    if mesh.uvs is None or mesh.texture is None:
        raise PcganError(f"{path}: this face has no UVs/texture; write it as .ply")
    path = Path(path)
    mtl, png = path.with_suffix(".mtl"), path.with_suffix(".png")
    with atomic_path(png) as tmp:
        Image.fromarray(mesh.texture(texture_size)).save(tmp, format="PNG")
    with atomic_path(mtl) as tmp:
        tmp.write_text(f"# pcgan synth-faces\nnewmtl skin\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd {png.name}\n")
    f = mesh.faces + 1
    lines = [f"# pcgan synth-faces, units mm\nmtllib {mtl.name}\n",
             "".join(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in mesh.vertices.tolist()),
             "".join(f"vt {u:.5f} {v:.5f}\n" for u, v in mesh.uvs.tolist()),
             "usemtl skin\n",
             "".join(f"f {a}/{a} {b}/{b} {c}/{c}\n" for a, b, c in f.tolist())]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(lines))
    return [path, mtl, png]


def write_face(mesh: FaceMesh, path, texture_size: int = 256) -> list[Path]:
    """Write a face as .ply (vertex colours) or .obj (+ .mtl + texture .png), by suffix."""
    path = Path(path)
    if path.suffix == ".ply":
        write_ply(path, mesh)
        return [path]
    if path.suffix == ".obj":
        return write_obj(path, mesh, texture_size)
    raise PcganError(f"{path}: write faces as .ply or .obj")


# ---------------------------------------------------------------------------------------------
# Dataset generation


@dataclass(frozen=True)
class SynthConfig:
    """What `pcgan synth-faces` makes; everything except the output folder goes into the JSON."""

    n: int                             # number of faces
    seed: int = 0                      # face i uses default_rng([seed, i])
    resolution: int = 112              # procedural vertex grid side
    obj_every: int = 4                 # every k-th face (index % k == k - 1) as .obj + texture; 0 = none
    texture_size: int = 256            # .obj texture side, pixels
    shape_model: str = "procedural"    # "procedural" or "ict"
    ict_path: str | None = None        # ict_facemodel.npz or the FaceXModel folder
    ict_sigma: float = 1.0             # std of the ICT identity coefficients
    ict_expression_scale: float = 1.0  # scales the sampled ICT expression weights
    ict_identities: int | None = None  # use the first K identity modes (None = all)
    ict_region: str = "head"           # "head" or "face"

    def validate(self) -> "SynthConfig":
        if self.n < 1:
            raise PcganError(f"--n {self.n}: the number of faces must be at least 1")
        if self.resolution < 16:
            raise PcganError(f"--resolution {self.resolution}: use at least 16 (default 112)")
        if self.obj_every < 0:
            raise PcganError(f"--obj-every {self.obj_every}: use 0 (no .obj) or a positive interval")
        if not 16 <= self.texture_size <= 8192:
            raise PcganError(f"--texture-size {self.texture_size}: use 16..8192 pixels")
        if self.shape_model not in ("procedural", "ict"):
            raise PcganError(f"--shape-model {self.shape_model!r}: use 'procedural' or 'ict PATH'")
        if self.shape_model == "ict" and not self.ict_path:
            raise PcganError("--shape-model ict needs a PATH: ict_facemodel.npz or ICT-FaceKit's FaceXModel folder")
        if not self.ict_sigma > 0:
            raise PcganError(f"--ict-sigma {self.ict_sigma}: must be positive")
        if not self.ict_expression_scale >= 0:
            raise PcganError(f"--ict-expression-scale {self.ict_expression_scale}: must be 0 or more")
        if self.ict_identities is not None and self.ict_identities < 0:
            raise PcganError(f"--ict-identities {self.ict_identities}: use 0..100 (0 = the mean identity)")
        return self


_WORKER: dict = {}


def _init_worker(cfg: SynthConfig, out: str) -> None:
    _WORKER["cfg"], _WORKER["out"] = cfg, Path(out)
    if cfg.shape_model == "ict":
        from data_tools.ict_model import EXPRESSION_SAMPLING, load_ict_model

        names = [b + s for b in EXPRESSION_SAMPLING for s in ("_L", "_R", "")]
        _WORKER["ict"] = load_ict_model(cfg.ict_path, cfg.ict_identities, names, strict=False)


def generate_one(index: int) -> dict:
    """Make and write face ``index`` (worker state from _init_worker). Returns its JSON record."""
    cfg, out = _WORKER["cfg"], _WORKER["out"]
    rng = np.random.default_rng([cfg.seed, index])
    if cfg.shape_model == "ict":
        from data_tools.ict_model import make_ict_face, sample_ict_params

        params = sample_ict_params(rng, _WORKER["ict"], cfg.ict_sigma, cfg.ict_expression_scale)
        mesh = make_ict_face(_WORKER["ict"], params, cfg.ict_region)
        record_params = dataclasses.asdict(params)
    else:
        params = sample_params(rng)
        mesh = make_face(params, cfg.resolution)
        record_params = dataclasses.asdict(params)
    as_obj = cfg.obj_every > 0 and index % cfg.obj_every == cfg.obj_every - 1 and mesh.uvs is not None
    path = out / f"face_{index:06d}.{'obj' if as_obj else 'ply'}"
    files = write_face(mesh, path, cfg.texture_size)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    return {"index": index, "file": path.name, "files": [p.name for p in files],
            "format": "obj+png" if as_obj else "ply", "vertices": len(mesh.vertices),
            "triangles": len(mesh.faces), "bbox_mm": [lo.tolist(), hi.tolist()],
            "landmarks_mm": mesh.landmarks, "params": record_params}


def generate(cfg: SynthConfig, out, workers: int = 1, progress=None) -> dict:
    """Write ``cfg.n`` faces and ``synth_faces.json`` into ``out``. Returns the JSON dict.

    ``progress``: optional callable wrapping an iterable (e.g. tqdm) for the CLI's bar."""
    from pcgan.fileio import ensure_writable_dir, write_json

    cfg.validate()
    out = ensure_writable_dir(out)
    if cfg.shape_model == "ict":
        ict = Path(cfg.ict_path)
        if not ict.exists():
            raise PcganError(f"--shape-model ict {ict}: no such file or folder "
                             "(pass ict_facemodel.npz or ICT-FaceKit's FaceXModel folder)")
    t0 = time.perf_counter()
    wrap = progress or (lambda it, total: it)
    _WORKER.clear()
    if workers <= 1:
        _init_worker(cfg, str(out))
        records = [generate_one(i) for i in wrap(range(cfg.n), cfg.n)]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(cfg, str(out))) as pool:
            records = list(wrap(pool.map(generate_one, range(cfg.n), chunksize=8), cfg.n))
    _WORKER.clear()
    info = {
        "generator": "pcgan synth-faces", "schema_version": 1,
        "config": dataclasses.asdict(cfg), "units": "mm",
        "frame": "+y up, the face looks along +z, +x is the subject's left; origin near the head "
                 "centre at eye height, then each face's pose jitter (params.pose)",
        "colour_space": "sRGB, 8-bit (as scanners store colour)",
        "faces": records,
    }
    if cfg.shape_model == "ict":
        info["ict_units_in_source"] = "cm"
        info["ict_licence"] = "ICT Face Model Light, MIT, (c) 2020 USC Institute for Creative Technologies"
    write_json(out / "synth_faces.json", info)
    log.debug("wrote %d faces to %s in %.1f s", cfg.n, out, time.perf_counter() - t0)
    return info


# ---------------------------------------------------------------------------------------------
# Command line


HELP = "write procedural coloured face scans (.ply / .obj + texture) as a built-in dataset"


def _range_text(table: dict, keys=None, indent: int = 15) -> str:
    import textwrap

    text = ", ".join(f"{k} {table[k][0]:g}..{table[k][1]:g}" for k in (keys or table))
    pad = " " * indent
    return textwrap.fill(text, 92, initial_indent=pad, subsequent_indent=pad)[indent:]


# Parameter groups for --help; every sampled shape parameter appears in exactly one.
_HELP_GROUPS = {
    "head": ("head_width", "head_height", "head_depth", "jaw_width", "chin_width", "jaw_square", "chin",
             "forehead_slope"),
    "brows/eyes": ("brow_ridge", "brow_thickness", "eye_spacing", "eye_width", "eye_open", "eye_tilt", "eye_socket"),
    "nose": ("nose_length", "nose_protrusion", "nose_width", "nose_bridge", "nose_tip"),
    "cheeks": ("cheekbones", "cheeks"),
    "mouth": ("mouth_width", "upper_lip", "lower_lip", "lip_protrusion"),
    "ears/hair": ("ear_size", "hair_line", "temples", "hair_volume"),
}
assert sorted(sum(_HELP_GROUPS.values(), ())) == sorted(SHAPE_RANGES), "every shape range needs a help group"


def _variation_text() -> str:
    lines = [f"  {group + ':':<13}{_range_text(SHAPE_RANGES, keys)}" for group, keys in _HELP_GROUPS.items()]
    lines.append("  chained:     " + ", ".join(f"{k} = {a} + {lo:g}..{hi:g}" for k, (a, lo, hi) in PROPORTIONS.items())
                 + "\n               (mouth_y: eye line to mouth; eye_to_chin: eye line to chin)")
    lines.append(f"  notes:       hair_style {', '.join(f'{k} {v:.0%}' for k, v in HAIR_STYLES.items())}; "
                 "eye_spacing is half the\n               pupil distance; eye_tilt in degrees; jaw_width "
                 "and chin_width are ratios;\n               temples: hairline rise per mm^2 off-centre")
    return "\n".join(lines)


EPILOG = f"""\
examples:
  pcgan synth-faces --n 200 --out data/synth                  # 150 .ply + 50 .obj/.mtl/.png
  pcgan synth-faces --n 1000 --out data/synth --seed 7 --workers 2
  pcgan synth-faces --n 8 --out /tmp/faces --obj-every 0 --resolution 160
  pcgan synth-faces --n 100 --out data/ict --shape-model ict ICT-FaceKit/FaceXModel
  pcgan synth-faces --n 100 --out data/ict --shape-model ict ../shared/realdata/faces/ict_facekit/ict_facemodel.npz

output:
  DIR/face_000000.ply ...   binary PLY, x y z float32 in mm, red green blue uchar, triangles
  DIR/face_000003.obj       every --obj-every'th face: .obj + .mtl + .png texture (per-vertex UVs)
  DIR/synth_faces.json      the seed, the config, and every face's parameters and landmarks
  Face i depends only on (seed, i): face 3 is the same with --n 5 and --n 10.
  Frame: mm, +y up, face looking along +z, +x = subject's left, origin near the head centre at
  eye height, then a random pose: {_range_text(POSE_RANGES, indent=2)}
  (degrees / mm).

variation of procedural faces (uniform in the range; mm unless noted):
{_variation_text()}
  expression:  smile {EXPRESSION_RANGES['smile'][0]:g}..{EXPRESSION_RANGES['smile'][1]:g} with probability {P_SMILE:.0%} (else 0),
               mouth_open (jaw drop) {EXPRESSION_RANGES['mouth_open'][0]:g}..{EXPRESSION_RANGES['mouth_open'][1]:g} mm with probability {P_OPEN:.0%} (else 0),
               {_range_text(EXPRESSION_RANGES, ('brow_raise', 'gaze_x', 'gaze_y'))}
  colour:      skin_tone 0..1 along {len(SKIN_TONES)} tones from very light to very dark (+-4% per channel),
               lips = skin darkened and reddened, iris {', '.join(IRIS_COLOURS)},
               hair and brows {', '.join(HAIR_COLOURS)},
               brow_density 0.55..0.95, blush 0..0.12, skin_noise (blotches) 0.005..0.03

ICT shape source (--shape-model ict PATH):
  The ICT Face Model Light (MIT, https://github.com/ICT-VGL/ICT-FaceKit): neutral + sum_k c_k
  identity_k, c_k ~ N(0, --ict-sigma^2) over all 100 modes, plus a few ARKit expressions
  (smile, jawOpen, brows, blink, cheek squint) with small random weights. PATH is the converted
  ict_facemodel.npz or the FaceXModel folder of a clone. Converted from cm to mm, coloured with
  the same skin/lip/eye/hair palette (regions from the model's eyeballs, lip and brow landmarks),
  written as .ply only (its UV atlas spans several tiles).
"""


def add_arguments(p) -> None:
    p.add_argument("--n", type=int, required=True, help="number of faces to write")
    p.add_argument("--out", required=True, help="output folder (created if needed)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed; face i uses default_rng([seed, i]) (default 0)")
    p.add_argument("--resolution", type=int, default=112,
                   help="procedural mesh: vertex grid side, 2*(R-1)^2 triangles (default 112: 24,642)")
    p.add_argument("--obj-every", type=int, default=4,
                   help="write every k-th face as .obj + .mtl + .png texture, the rest as .ply; 0 = all .ply (default 4)")
    p.add_argument("--texture-size", type=int, default=256, help=".obj texture side in pixels (default 256)")
    p.add_argument("--shape-model", nargs="+", default=["procedural"], metavar=("KIND", "PATH"),
                   help="'procedural' (default) or 'ict PATH' with PATH = ict_facemodel.npz or the FaceXModel folder")
    p.add_argument("--ict-sigma", type=float, default=1.0, help="ICT: std of the identity coefficients (default 1)")
    p.add_argument("--ict-expression-scale", type=float, default=1.0, help="ICT: scale of the sampled expression weights (default 1)")
    p.add_argument("--ict-identities", type=int, default=None, help="ICT: use only the first K identity modes (default all)")
    p.add_argument("--ict-region", choices=("head", "face"), default="head",
                   help="ICT: 'head' = face, head and neck (default); 'face' = the model's full face area")
    p.add_argument("--workers", type=int, default=1, help="processes writing faces in parallel (default 1)")


def run(args) -> int:
    kind, *rest = args.shape_model
    if kind not in ("procedural", "ict") or (kind == "procedural" and rest) or len(rest) > 1:
        raise PcganError(f"--shape-model {' '.join(args.shape_model)}: use 'procedural' or 'ict PATH'")
    cfg = SynthConfig(
        n=args.n, seed=args.seed, resolution=args.resolution, obj_every=args.obj_every,
        texture_size=args.texture_size, shape_model=kind, ict_path=rest[0] if rest else None,
        ict_sigma=args.ict_sigma, ict_expression_scale=args.ict_expression_scale,
        ict_identities=args.ict_identities, ict_region=args.ict_region,
    ).validate()
    if args.workers < 1:
        raise PcganError(f"--workers {args.workers}: use 1 or more")
    from tqdm import tqdm

    info = generate(cfg, args.out, workers=args.workers,
                    progress=lambda it, total: tqdm(it, total=total, desc="synth-faces", unit="face", disable=None))
    n_obj = sum(r["format"] != "ply" for r in info["faces"])
    log.info("synth-faces: %d faces in %s (%d .ply, %d .obj+texture), parameters in %s",
             cfg.n, args.out, cfg.n - n_obj, n_obj, Path(args.out) / "synth_faces.json")
    return 0
