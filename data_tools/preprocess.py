"""``pcgan preprocess``: scans (meshes, point clouds, RGB-D) -> an XYZRGB grid dataset.

Pipeline, per scan: find the files -> load -> canonicalise (``canonical.py``) -> render a mesh
(``render.py``) or splat points (``points.py``) through the canonical camera -> one grid. The
dataset directory gets ``grids.npy``, ``dataset.json`` (``pcgan/dataset.py`` has the schema)
and ``preview.png``.

Two passes, both parallel over scans (``--workers``, spawn-safe; 1 = in this process):

1. *geometry*: each scan's ``to_canonical`` and its half-extent. Skipped when ``--scale`` is a
   number: then the grid pass canonicalises each scan itself.
2. *grids*: the dataset scale is fixed from pass 1 (``canonical.dataset_scale``), then every
   scan is rendered.

Resumable: each pass caches its per-scan result under ``DATASET/.cache`` keyed by the file's
sha256 and a hash of every option that affects it. Re-running the same command only hashes the
files and re-assembles the dataset; adding scans converts just the new ones (unless the new
scans move the automatic scale, which re-renders all). ``--force`` ignores the cache. Edits to
an OBJ's ``.mtl`` or texture are not seen by the key: use ``--force`` after those.

Bad input never stops the batch: each failed file gets one line naming it and the problem, a
record with ``status: "failed"`` in ``dataset.json`` and a line in the summary. The command
exits 1 only when nothing could be converted. A bad ``--res`` or ``--out`` fails before any
work (exit 2).
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from data_tools.canonical import (CanonOptions, apply_transform, canonicalise, dataset_scale,
                                  load_transforms, sample_surface)
from pcgan.dataset import GRIDS_FILE, INFO_FILE, PREVIEW_FILE, make_split, write_dataset
from pcgan.errors import PcganError
from pcgan.fileio import atomic_path, ensure_writable_dir, write_json
from pcgan.grid import DEFAULT_CHANNELS, XYZ, Camera, GridMeta, sheet_xyz, surface_mask

log = logging.getLogger(__name__)

HELP = "convert scans (meshes, point clouds, RGB-D pairs) into an XYZRGB grid dataset"
EPILOG = """\
examples:
  # a folder of textured OBJ / PLY / GLB meshes and point clouds, 256x256 grids, 2 processes
  pcgan preprocess scans/ --out data/faces256 --res 256 --workers 2 --units mm

  # scans from a z-up scanner whose faces look along -y; fixed scale (mm per unit)
  pcgan preprocess 'scans/**/*.ply' --out data/faces --up +z --forward -y --scale 120

  # per-file 4x4 transforms (scan frame -> canonical, y up, face along +z, centred)
  pcgan preprocess scans/ --out data/faces --transforms transforms.json

  # RGB-D captures (NAME_color.png + NAME_depth.png + intrinsics.json), metres
  pcgan preprocess captures/ --out data/kinect --rgbd-crop auto --units m

  # re-run after adding scans: converted files are taken from DATASET/.cache
  pcgan preprocess scans/ --out data/faces256 --res 256

Exit status: 0 if at least one scan was converted, 1 if none, 2 for a bad option.
Inspect the result with `pcgan dataset info DATASET` and its preview.png.
"""

CACHE_DIR = ".cache"
CACHE_VERSION = 1                      # bump when a change makes cached grids stale
MESH_SUFFIXES = (".obj", ".off", ".stl", ".glb", ".gltf")
POINT_SUFFIXES = (".pcd", ".xyz", ".xyzrgb", ".xyzn", ".pts", ".npy", ".npz", ".txt")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
WALK_SKIP_SUFFIXES = (".txt",)         # in folders, .txt is a licence or a readme, not a cloud
HASH_CHUNK = 1 << 20
SHEET_MARGIN = 0.05                    # --sheet-z auto: the sheet lies this far behind the deepest surface point


# ---------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser) -> None:
    parser.add_argument("scans", nargs="+", metavar="SCANS",
                        help="scan files, folders (searched recursively) or quoted glob patterns")
    parser.add_argument("--out", required=True, metavar="DATASET", help="dataset directory to write")
    parser.add_argument("--res", type=int, default=256, help="grid resolution, a power of two (default 256)")
    parser.add_argument("--workers", type=int, default=0,
                        help="processes converting scans in parallel; 1 = in this process, 0 = one per CPU (max 8)")
    cam = parser.add_argument_group("camera and grid")
    cam.add_argument("--projection", choices=("perspective", "orthographic"), default="perspective",
                     help="canonical camera model (default perspective)")
    cam.add_argument("--fov", type=float, default=Camera.fov_deg, help="perspective field of view, degrees")
    cam.add_argument("--distance", type=float, default=Camera.distance,
                     help="camera distance from the origin, normalised units")
    cam.add_argument("--ortho-extent", type=float, default=Camera.ortho_half_extent,
                     help="orthographic half width of the view, normalised units")
    cam.add_argument("--no-mask", action="store_true", help="leave out the mask channel (6 channels)")
    cam.add_argument("--background-rgb", default="0,0,0", help="colour of empty pixels, r,g,b in [0, 1]")
    cam.add_argument("--sheet-z", default="auto",
                     help="z of the background plane that empty pixels hold, normalised units; auto (default): "
                          f"{SHEET_MARGIN:g} behind the dataset's deepest surface point")
    can = parser.add_argument_group("canonicalisation (see data_tools/canonical.py)")
    can.add_argument("--orient", choices=("auto", "axes", "none", "file"), default=None,
                     help="auto (symmetry + nose; default), axes (--up/--forward), none, file (--transforms)")
    can.add_argument("--up", help="scan axis pointing up, e.g. +y, -z or 0,0.1,1 (implies --orient axes)")
    can.add_argument("--forward", help="scan axis the face looks along, e.g. +z (implies --orient axes)")
    can.add_argument("--transforms", metavar="JSON",
                     help="per-file 4x4 to_canonical matrices {\"file\": [[...]x4]} (implies --orient file)")
    can.add_argument("--center", choices=("bbox", "none"), default="bbox",
                     help="bbox: centre each scan's robust bounding box at the origin; none: keep its origin")
    can.add_argument("--scale", default="auto",
                     help="auto (robust over the dataset), per-scan (each scan to its own size, for mixed "
                          "units) or a number of scan units per normalised unit")
    can.add_argument("--units", default=None, help="units of the scans (recorded), e.g. mm, cm, m")
    col = parser.add_argument_group("colour and scan loading")
    col.add_argument("--default-rgb", default="0.7,0.7,0.7",
                     help="colour of surfaces without texture or vertex colour, r,g,b in [0, 1]")
    col.add_argument("--rgbd-crop", default="auto",
                     help="RGB-D crop: auto, none, or box=X0,Y0,X1,Y1+depth=NEAR,FAR+band=M (see rgbd.py)")
    col.add_argument("--depth-scale", type=float, default=None,
                     help="RGB-D depth units per metre (default: from the intrinsics JSON, else 1000)")
    col.add_argument("--depth-trunc", type=float, default=None, help="RGB-D: ignore depth beyond this, metres")
    out = parser.add_argument_group("dataset")
    out.add_argument("--val-fraction", type=float, default=0.1, help="fraction of grids in the val split")
    out.add_argument("--seed", type=int, default=0, help="seed of the train/val split")
    out.add_argument("--preview", type=int, default=8, help="grids shown in preview.png (0: none)")
    out.add_argument("--force", action="store_true", help="ignore cached results and convert every scan again")


def _sheet_z(text: str) -> float | None:
    """``--sheet-z``: None for auto, else the number."""
    if str(text).strip().lower() == "auto":
        return None
    try:
        z = float(text)
    except ValueError:
        raise PcganError(f"--sheet-z {text!r}: use auto or a number (normalised z)") from None
    if not math.isfinite(z):
        raise PcganError(f"--sheet-z {text!r}: must be finite")
    return z


def _rgb(text: str, flag: str) -> tuple[float, float, float]:
    try:
        v = tuple(float(t) for t in text.split(","))
    except ValueError:
        v = ()
    if len(v) != 3 or not all(0.0 <= c <= 1.0 for c in v):
        raise PcganError(f"{flag} {text!r}: give three numbers in [0, 1], e.g. 0.7,0.7,0.7")
    return v


def _check_res(res: int) -> None:
    if res < 4 or res & (res - 1):
        raise PcganError(f"--res {res}: must be a power of two >= 4 (e.g. 64, 128, 256)")


# ---------------------------------------------------------------------------------------------
# Jobs and settings (plain, picklable: they travel to worker processes)


@dataclass(frozen=True)
class Job:
    """One scan to convert."""

    order: int                       # position in the input listing
    kind: str                        # "mesh", "points", "ply" (mesh or points, decided on reading), "rgbd", "unknown"
    path: str                        # the scan file (RGB-D: the colour image)
    depth: str | None = None         # RGB-D: depth image
    intrinsics: str | None = None    # RGB-D: intrinsics JSON
    error: str | None = None         # set when discovery already knows the file is unusable


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs besides the job."""

    cache: str                                  # DATASET/.cache
    meta: GridMeta                              # scale is provisional in the geometry pass
    canon: CanonOptions
    default_rgb: tuple[float, float, float]
    rgbd_crop: str = "auto"
    depth_scale: float | None = None
    depth_trunc: float | None = None
    force: bool = False
    fixed_scale: bool = False                   # --scale NUMBER: no geometry pass
    transforms_sha256: str | None = None        # content of --transforms, for the cache key

    def load_options(self) -> dict:
        return {"rgbd_crop": self.rgbd_crop, "depth_scale": self.depth_scale, "depth_trunc": self.depth_trunc,
                "transforms": self.transforms_sha256}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Discovery


def discover(scans: list[str]) -> tuple[list[Job], int]:
    """Expand files, folders (recursive) and glob patterns into jobs, in input order.

    Named files with an unknown extension become failed jobs; in folders, files that are not
    scans (textures, .mtl, .json, licences) are skipped and counted. Returns (jobs, skipped)."""
    from data_tools import rgbd

    jobs: list[Job] = []
    seen: set[Path] = set()
    skipped = 0

    def add(kind: str, path: Path, **kw) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        jobs.append(Job(order=len(jobs), kind=kind, path=str(path), **kw))

    def add_rgbd(item) -> None:
        seen.update({item.depth.resolve(), item.intrinsics.resolve()})
        add("rgbd", item.color, depth=str(item.depth), intrinsics=str(item.intrinsics))

    def add_file(path: Path, named: bool) -> bool:
        ext = path.suffix.lower()
        if ext == ".ply":
            add("ply", path)
        elif ext in MESH_SUFFIXES:
            add("mesh", path)
        elif ext in POINT_SUFFIXES and (named or ext not in WALK_SKIP_SUFFIXES):
            add("points", path)
        elif ext in IMAGE_SUFFIXES and named:
            try:
                items = rgbd.find_rgbd([path])
            except PcganError as exc:
                add("unknown", path, error=str(exc))
                return True
            for item in items:
                add_rgbd(item)
        elif named:
            add("unknown", path, error=f"{path}: unknown extension {ext or '(none)'!r}; scans are meshes "
                                       f"({' '.join(MESH_SUFFIXES + ('.ply',))}), point clouds "
                                       f"({' '.join(POINT_SUFFIXES)}) or RGB-D colour/depth images")
        else:
            return False
        return True

    def walk(folder: Path) -> None:
        nonlocal skipped
        for sub in sorted([folder] + [p for p in folder.rglob("*") if p.is_dir()]):
            if rgbd.looks_like_rgbd(sub):
                for item in rgbd.find_rgbd([sub]):
                    add_rgbd(item)
            for f in sorted(p for p in sub.iterdir() if p.is_file()):
                if f.resolve() in seen:
                    continue
                if not add_file(f, named=False):
                    skipped += 1

    for arg in scans:
        path = Path(arg)
        if path.is_dir():
            walk(path)
        elif path.is_file():
            add_file(path, named=True)
        elif any(c in arg for c in "*?["):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                add("unknown", path, error=f"{arg}: no file matches this pattern")
            for m in map(Path, matches):
                if m.is_dir():
                    walk(m)
                else:
                    add_file(m, named=True)
        else:
            add("unknown", path, error=f"{arg}: no such file or directory")
    return jobs, skipped


# ---------------------------------------------------------------------------------------------
# One scan (runs in a worker)


def load_scan(job: Job, settings: Settings):
    """Load one scan for the pipeline (also used by ``pcgan invert --scan``).
    -> (kind: "mesh" | "points" | "rgbd", the loaded scan, points for canonicalisation [N, 3],
    warnings)."""
    from data_tools import meshes, points, rgbd

    kind = job.kind
    if kind == "ply":
        kind = "mesh" if meshes.ply_has_faces(job.path) else "points"
    if kind == "mesh":
        mesh = meshes.load_mesh(job.path)
        # area-uniform samples: orientation needs many, a robust bounding box far fewer
        count = 20000 if settings.canon.orient == "auto" else 5000
        return kind, mesh, sample_surface(mesh.vertices, mesh.triangles, count), list(mesh.warnings)
    if kind == "points":
        scan = points.load_point_cloud(job.path)
        return kind, scan, scan.points, [w for w in scan.info.get("warnings", [])]
    if kind == "rgbd":
        item = rgbd.RgbdInput(color=Path(job.path), depth=Path(job.depth), intrinsics=Path(job.intrinsics),
                              name=Path(job.path).stem)
        scan = rgbd.load_rgbd(item, depth_scale=settings.depth_scale, depth_trunc=settings.depth_trunc,
                              crop=settings.rgbd_crop)
        return kind, scan, scan.points, [w for w in scan.info.get("warnings", [])]
    raise PcganError(job.error or f"{job.path}: not a scan")


def _sha(job: Job) -> dict:
    out = {"sha256": sha256_file(job.path)}
    if job.kind == "rgbd":
        out["depth_sha256"] = sha256_file(job.depth)
        out["intrinsics_sha256"] = sha256_file(job.intrinsics)
    return out


def _canonical(job: Job, settings: Settings, kind: str, pts: np.ndarray) -> dict:
    transforms = load_transforms(settings.canon.transforms) if settings.canon.orient == "file" else None
    T, extent, info = canonicalise(pts, settings.canon, job.path, transforms, keep_orientation=(kind == "rgbd"))
    return {"to_canonical": T.tolist(), "half_extent": extent, "canonical": info}


def normalisation_matrix(meta: GridMeta) -> np.ndarray:
    """4x4 canonical frame -> normalised grid frame: (p - center) / scale."""
    N = np.eye(4) / meta.scale
    N[3, 3] = 1.0
    N[:3, 3] = -np.asarray(meta.center) / meta.scale
    return N


def render_scan(kind: str, scan, T: np.ndarray, settings: Settings, name: str) -> tuple[np.ndarray, dict]:
    """A loaded scan (``load_scan``) -> its grid ``[C, H, W]`` and render stats, with ``T`` its
    4x4 scan -> canonical transform: ray-cast for meshes, splat for points and RGB-D."""
    from data_tools import points, render

    to_grid = normalisation_matrix(settings.meta) @ T
    if kind == "mesh":
        return render.render_mesh(scan, to_grid, settings.meta, settings.default_rgb)
    pts = apply_transform(to_grid, scan.points)
    return points.splat_points(pts, scan.colors, settings.meta, default_rgb=settings.default_rgb, name=name)


class _Collect(logging.Handler):
    """Collects the warnings that loaders log, for the file's record."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(" ".join(record.getMessage().split()))


@contextlib.contextmanager
def _collect_warnings():
    logger = logging.getLogger("data_tools")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False            # printed once, by the command, from the record
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def convert(job: Job, settings: Settings, stage: str, to_canonical: list | None = None) -> dict:
    """Run one pass ("geometry" or "grid") for one scan; never raises for bad input.

    With ``to_canonical`` (from the geometry pass) the grid pass uses it; without, it
    canonicalises the scan itself. Returns the file record for dataset.json (``status`` "ok"
    or "failed"); the grid itself goes to the cache (``record["grid_file"]``)."""
    rec = {"path": job.path, "kind": job.kind, "status": "failed", "error": None, "warnings": [], "cached": False}
    if job.kind == "rgbd":
        rec.update(depth=job.depth, intrinsics=job.intrinsics)
    with _collect_warnings() as logged:
        try:
            if job.error:
                raise PcganError(job.error)
            rec.update(_sha(job))
            cache = Path(settings.cache)
            shas = [rec.get(k) for k in ("sha256", "depth_sha256", "intrinsics_sha256")]
            by_path = job.path if settings.canon.orient == "file" else None   # the JSON is keyed by path
            geo_key = f"{rec['sha256'][:24]}-" + _digest([CACHE_VERSION, job.kind, shas, by_path,
                                                          asdict(settings.canon), settings.load_options()])
            geo_file = cache / "geometry" / f"{geo_key}.json"
            loaded = None
            if to_canonical is None:
                if geo_file.is_file() and not settings.force:
                    rec.update(json.loads(geo_file.read_text()), cached=True)
                else:
                    loaded = load_scan(job, settings)
                    kind, _, pts, warnings = loaded
                    rec.update(kind=kind, warnings=warnings + logged, **_canonical(job, settings, kind, pts))
                    write_json(geo_file, {k: rec[k] for k in ("kind", "warnings", "to_canonical",
                                                               "half_extent", "canonical")})
                if stage == "geometry":
                    rec["status"] = "ok"
                    return rec
                to_canonical = rec["to_canonical"]
            rec["to_canonical"] = to_canonical
            key = _digest([CACHE_VERSION, geo_key, to_canonical, settings.meta.to_dict(), settings.default_rgb])
            grid_file = cache / "grids" / f"{rec['sha256'][:24]}-{key}.npz"    # the grid and its record
            if grid_file.is_file() and not settings.force:
                with np.load(grid_file) as z:
                    rec.update(json.loads(str(z["record"])), cached=True)
            else:
                kind, scan, _, warnings = loaded or load_scan(job, settings)
                grid, stats = render_scan(kind, scan, np.asarray(to_canonical), settings, job.path)
                if not np.isfinite(grid).all():
                    raise PcganError(f"{job.path}: the grid has NaN/Inf values after conversion")
                rec.update(kind=kind, render=stats, cached=False,
                           warnings=list(dict.fromkeys(rec["warnings"] + warnings + logged)))
                grid_file.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(grid_file) as tmp:
                    np.savez(tmp, grid=grid.astype(np.float16),
                             record=np.array(json.dumps({k: rec[k] for k in ("kind", "render", "warnings")})))
            rec.update(status="ok", grid_file=str(grid_file))
        except PcganError as exc:
            msg = " ".join(str(exc).split())
            rec["error"] = msg if job.path in msg else f"{job.path}: {msg}"
        except MemoryError:
            rec["error"] = f"{job.path}: out of memory while converting"
        except Exception as exc:   # a reader bug must not stop the batch; the record says what happened
            log.debug("unexpected error on %s", job.path, exc_info=True)
            rec["error"] = f"{job.path}: unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"
    return rec


def _one_thread() -> None:
    """Grid helpers run in torch on small arrays; its default thread pool only fights the
    other workers (and Open3D) for the cores, making them many times slower."""
    import torch
    torch.set_num_threads(1)


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    _one_thread()


# ---------------------------------------------------------------------------------------------
# Running a pass over all jobs


def _echo(line: str, limit: int = 400) -> None:
    from tqdm import tqdm
    tqdm.write(line if len(line) <= limit else line[:limit - 3] + "...", file=sys.stderr)


class Workers:
    """Worker processes shared by both passes (started once), or none for ``count`` 1.

    Uses the ``forkserver`` start method where the OS has it: one server process imports
    pcgan, Open3D and the readers once and forks each worker from itself, so a worker costs
    milliseconds instead of the seconds a ``spawn`` re-import takes (torch alone is ~2 s).
    Elsewhere (Windows, macOS-less-forkserver) it is plain ``spawn``. Nothing relies on
    state inherited from this process, so either works."""

    PRELOAD = ["data_tools.preprocess", "data_tools.render", "data_tools.meshes", "data_tools.points",
               "data_tools.rgbd", "open3d"]

    def __init__(self, count: int):
        self.count = count
        self._pool: ProcessPoolExecutor | None = None

    @staticmethod
    def context():
        import multiprocessing as mp
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(Workers.PRELOAD)
            return ctx
        return mp.get_context("spawn")

    def executor(self, count: int | None = None) -> ProcessPoolExecutor:
        """The shared pool, or with ``count`` a new private one (the caller shuts it down)."""
        level = logging.getLogger().getEffectiveLevel()
        make = lambda n: ProcessPoolExecutor(max_workers=n, mp_context=self.context(),   # noqa: E731
                                             initializer=_init_worker, initargs=(level,))
        if count is not None:
            return make(count)
        if self._pool is None:
            self._pool = make(self.count)
        return self._pool

    def discard(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.discard()


def run_pass(jobs: list[Job], settings: Settings, stage: str, workers: Workers,
             to_canonical: dict[int, list] | None = None, shown: set | None = None) -> dict[int, dict]:
    """Convert every job for one pass; returns records by job order. Prints one line per
    failure and per new warning (``shown`` holds those printed by an earlier pass), and a
    progress bar on a terminal."""
    from tqdm import tqdm

    to_canonical = to_canonical or {}
    shown = set() if shown is None else shown
    records: dict[int, dict] = {}
    bar = tqdm(total=len(jobs), desc=stage, unit="scan", disable=None, file=sys.stderr, leave=False)

    def done(job: Job, rec: dict) -> None:
        records[job.order] = rec
        if rec["status"] != "ok":
            _echo(f"failed: {rec['error']}")
        for w in rec.get("warnings", []):
            if w not in shown:
                shown.add(w)
                _echo(f"warning: {w}")
        bar.update(1)

    def submit_all(pool, batch) -> None:
        futures = {pool.submit(convert, job, settings, stage, to_canonical.get(job.order)): job for job in batch}
        for fut in as_completed(futures):
            done(futures[fut], fut.result())

    if workers.count <= 1:
        for job in jobs:
            done(job, convert(job, settings, stage, to_canonical.get(job.order)))
    else:
        try:
            submit_all(workers.executor(), jobs)
        except BrokenProcessPool:
            # A worker died (a reader crashed on a file, or out of memory): run each remaining
            # job in a process of its own, so the file that kills one is named and the rest go on.
            workers.discard()
            for job in [j for j in jobs if j.order not in records]:
                solo = workers.executor(1)
                try:
                    submit_all(solo, [job])
                except BrokenProcessPool:
                    done(job, {"path": job.path, "kind": job.kind, "status": "failed", "warnings": [],
                               "error": f"{job.path}: the converting process crashed on this file "
                                        f"(corrupt file or reader bug)"})
                finally:
                    solo.shutdown(wait=True, cancel_futures=True)
    bar.close()
    return records


# ---------------------------------------------------------------------------------------------
# The command


def _settings_from_args(args) -> tuple[Settings, str, float | None]:
    """Validate every option before any work; returns (settings, scale mode, fixed scale)."""
    _check_res(args.res)
    orient = args.orient
    if orient is None:
        orient = "file" if args.transforms else "axes" if (args.up or args.forward) else "auto"
    if (args.up or args.forward) and orient != "axes":
        raise PcganError(f"--up/--forward are used with --orient axes, not --orient {orient}")
    if args.transforms and orient != "file":
        raise PcganError(f"--transforms is used with --orient file, not --orient {orient}")
    canon_kw = dict(orient=orient, up=args.up, forward=args.forward, center=args.center,
                    transforms=str(Path(args.transforms).resolve()) if args.transforms else None)
    scale_mode, fixed = args.scale.strip().lower(), None
    if scale_mode not in ("auto", "per-scan"):
        try:
            fixed = float(scale_mode)
        except ValueError:
            raise PcganError(f"--scale {args.scale!r}: use auto, per-scan or a positive number") from None
        if not (fixed > 0 and math.isfinite(fixed)):
            raise PcganError(f"--scale {args.scale!r}: must be a positive number of scan units per unit")
        scale_mode = "fixed"
    canon = CanonOptions(per_scan_scale=(scale_mode == "per-scan"), **canon_kw)
    if canon.orient == "axes":
        from data_tools.canonical import parse_axis, rotation_from_axes
        rotation_from_axes(parse_axis(canon.up), parse_axis(canon.forward))
    if canon.orient == "file":
        load_transforms(canon.transforms)
    if args.workers < 0:
        raise PcganError(f"--workers {args.workers}: must be >= 0")
    if not 0.0 <= args.val_fraction < 1.0:
        raise PcganError(f"--val-fraction {args.val_fraction}: must be in [0, 1)")
    from data_tools.rgbd import parse_crop
    parse_crop(args.rgbd_crop)
    camera = Camera(projection=args.projection, fov_deg=args.fov, distance=args.distance,
                    ortho_half_extent=args.ortho_extent)
    channels = DEFAULT_CHANNELS[:6] if args.no_mask else DEFAULT_CHANNELS
    sheet_z = _sheet_z(args.sheet_z)        # None (auto): render with the usual sheet, move it at assembly
    meta = GridMeta(resolution=args.res, channels=channels, camera=camera, scale=fixed or 1.0,
                    units=args.units or "unknown", background_rgb=_rgb(args.background_rgb, "--background-rgb"),
                    sheet_z=GridMeta.sheet_z if sheet_z is None else sheet_z)
    out = ensure_writable_dir(args.out)
    if (out / INFO_FILE).exists() and not os.access(out / INFO_FILE, os.W_OK):
        raise PcganError(f"{out / INFO_FILE} exists and is not writable")
    settings = Settings(cache=str(out / CACHE_DIR), meta=meta, canon=canon,
                        default_rgb=_rgb(args.default_rgb, "--default-rgb"), rgbd_crop=args.rgbd_crop,
                        depth_scale=args.depth_scale, depth_trunc=args.depth_trunc, force=args.force,
                        fixed_scale=fixed is not None,
                        transforms_sha256=sha256_file(canon.transforms) if canon.orient == "file" else None)
    return settings, scale_mode, fixed


def run(args) -> int:
    t0 = time.time()
    _one_thread()
    settings, scale_mode, fixed = _settings_from_args(args)
    out = Path(args.out)
    jobs, skipped = discover(args.scans)
    if not jobs:
        raise PcganError(f"no scans found in {' '.join(args.scans)} (meshes, point clouds or RGB-D pairs)")
    workers = args.workers or min(os.cpu_count() or 1, 8)
    workers = max(1, min(workers, len(jobs)))
    log.info("%d scan%s, %d worker%s -> %s", len(jobs), "s" * (len(jobs) != 1), workers, "s" * (workers != 1), out)

    with Workers(workers) as pool:
        records, meta = _convert_all(jobs, settings, scale_mode, pool)
    ordered = [records[j.order] for j in jobs]
    ok = [r for r in ordered if r["status"] == "ok"]
    units = meta.units
    if args.units is None and ok and all(r["kind"] == "rgbd" for r in ok):
        units = "m"
    if scale_mode == "per-scan":
        units = "per-scan"          # each scan's own size is 1; to_canonical holds its units
    meta = render_meta = GridMeta.from_dict({**meta.to_dict(), "units": units})
    if ok and _sheet_z(args.sheet_z) is None:
        meta = GridMeta.from_dict({**meta.to_dict(), "sheet_z": auto_sheet_z([r["grid_file"] for r in ok], meta)})
    if ok:
        _write(out, ordered, meta, render_meta, args, scale_mode, skipped)
    _summary(out, ordered, meta, skipped, workers, time.time() - t0, wrote=bool(ok))
    return 0 if ok else 1


def _convert_all(jobs: list[Job], settings: Settings, scale_mode: str, pool: Workers) -> tuple[dict, GridMeta]:
    """Both passes over all jobs: records by job order, and the final grid meta (scale)."""
    records: dict[int, dict] = {}
    to_canonical: dict[int, list] = {}
    shown: set[str] = set()
    meta = settings.meta
    if scale_mode != "fixed":
        records = run_pass(jobs, settings, "geometry", pool, shown=shown)
        ok = [records[j.order] for j in jobs if records[j.order]["status"] == "ok"]
        if ok:
            scale = 1.0 if scale_mode == "per-scan" else dataset_scale([r["half_extent"] for r in ok])
            meta = GridMeta.from_dict({**meta.to_dict(), "scale": scale})
            to_canonical = {o: r["to_canonical"] for o, r in records.items() if r["status"] == "ok"}
    settings = dataclasses.replace(settings, meta=meta)
    grid_jobs = [j for j in jobs if scale_mode == "fixed" or j.order in to_canonical]
    if grid_jobs:
        grid_records = run_pass(grid_jobs, settings, "grids", pool, to_canonical, shown)
        for order, rec in grid_records.items():
            if order in records:
                rec["cached"] = rec["cached"] and records[order].get("cached", False)
                rec["warnings"] = list(dict.fromkeys(records[order].get("warnings", []) + rec.get("warnings", [])))
                for k in ("half_extent", "canonical"):
                    rec.setdefault(k, records[order].get(k))
            records[order] = rec
    return records, meta


def auto_sheet_z(grid_files: list[str], meta: GridMeta, margin: float = SHEET_MARGIN) -> float:
    """``--sheet-z auto``: a background plane ``margin`` behind the deepest surface point of
    the cached grids (rendered with ``meta``), rounded down to 0.01.

    Why: at the silhouette a grid's z jumps from the face to the sheet. A generator makes that
    jump smooth, so its edge pixels get depths between the two ("skirts" of points hanging
    behind the face), and the further away the sheet, the longer the skirts. With the sheet just
    behind the face they are short (the demo's MMD-CD nearly halved, benchmarks/RESULTS.md)."""
    deepest = math.inf
    for f in grid_files:
        with np.load(f) as z:
            g = z["grid"].astype(np.float32)
        m = surface_mask(g, meta)
        if m.any():
            deepest = min(deepest, float(g[2][m].min()))
    if not math.isfinite(deepest):
        return meta.sheet_z                      # no surface anywhere: keep the rendering sheet
    return math.floor((deepest - margin) * 100) / 100


def _write(out: Path, ordered: list[dict], meta: GridMeta, render_meta: GridMeta, args, scale_mode: str,
           skipped: int) -> None:
    """Assemble cached grids (rendered with ``render_meta``) into grids.npy (through a memmap,
    so N need not fit in memory); empty pixels move onto ``meta``'s sheet when it differs."""
    ok = [r for r in ordered if r["status"] == "ok"]
    shape = (len(ok), meta.num_channels, meta.resolution, meta.resolution)
    files = []
    for row, rec in enumerate(ok):
        rec["index"] = row
    for rec in ordered:
        for key in ("index", "sha256", "to_canonical"):
            rec.setdefault(key, None)
        files.append({k: v for k, v in rec.items() if k not in ("grid_file", "cached")})
    info = {
        "files": files,
        "split": make_split(len(ok), args.val_fraction, args.seed),
        "preprocess": {
            "scans": list(args.scans), "res": args.res, "scale_mode": scale_mode,
            "orient": _canon_options(args), "default_rgb": list(_rgb(args.default_rgb, "--default-rgb")),
            "rgbd_crop": args.rgbd_crop, "depth_scale": args.depth_scale, "depth_trunc": args.depth_trunc,
            "sheet_z": str(args.sheet_z),
            "color_space": "srgb: the files' 8-bit values / 255, no linearisation",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "cache_version": CACHE_VERSION,
        },
        "summary": {"scans": len(ordered), "ok": len(ok), "failed": len(ordered) - len(ok),
                    "skipped_non_scan_files": skipped},
    }
    # A scratch memmap in the cache, so N grids need not fit in memory; write_dataset copies it
    # into grids.npy atomically, then the scratch file goes.
    scratch = out / CACHE_DIR / f"assemble-{os.getpid()}.npy"
    try:
        grids = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float16, shape=shape)
        sheet = sheet_xyz(meta)
        for row, rec in enumerate(ok):
            with np.load(rec["grid_file"]) as z:
                g = z["grid"]
            if meta.sheet_z != render_meta.sheet_z:
                g = g.astype(np.float32)
                empty = ~surface_mask(g, render_meta)
                g[XYZ][:, empty] = sheet[:, empty]
            grids[row] = g
        grids.flush()
        write_dataset(out, grids, meta, info)
        del grids
    finally:
        scratch.unlink(missing_ok=True)
    if args.preview > 0:
        from data_tools.dataset_cli import write_preview
        from pcgan.dataset import load_dataset
        ds = load_dataset(out)
        write_preview(out / PREVIEW_FILE, ds.grids, ds.meta, count=args.preview)


def _canon_options(args) -> dict:
    return {"orient": args.orient, "up": args.up, "forward": args.forward, "transforms": args.transforms,
            "center": args.center, "scale": args.scale, "units": args.units}


def _summary(out: Path, ordered: list[dict], meta: GridMeta, skipped: int, workers: int,
             seconds: float, wrote: bool) -> None:
    ok = [r for r in ordered if r["status"] == "ok"]
    failed = [r for r in ordered if r["status"] != "ok"]
    cached = sum(1 for r in ok if r.get("cached"))
    kinds = sorted({r["kind"] for r in ordered})
    lines = ["", f"pcgan preprocess: {len(ordered)} scan{'s' * (len(ordered) != 1)}, {len(ok)} converted "
             f"({cached} from cache), {len(failed)} failed" + (f", {skipped} non-scan files skipped" if skipped else "")]
    lines.append(f"  {'kind':<8}{'ok':>6}{'failed':>8}")
    for k in kinds:
        lines.append(f"  {k:<8}{sum(r['kind'] == k for r in ok):>6}{sum(r['kind'] == k for r in failed):>8}")
    if failed:
        lines.append("failed:")
        lines += [f"  {r['error'] if len(r['error']) < 400 else r['error'][:397] + '...'}" for r in failed]
    n_warn = sum(len(r.get("warnings", [])) for r in ok)
    if n_warn:
        lines.append(f"warnings: {n_warn} (listed per file in {out / INFO_FILE})")
    if wrote:
        lines.append(f"wrote {out / GRIDS_FILE} [{len(ok)}, {meta.num_channels}, {meta.resolution}, "
                     f"{meta.resolution}] float16, scale {meta.scale:.6g} {meta.units} per unit, "
                     f"{out / INFO_FILE}, {out / PREVIEW_FILE}")
    else:
        lines.append(f"nothing converted: no dataset written to {out}")
    lines.append(f"{seconds:.1f} s, {len(ordered) / max(seconds, 1e-9):.2f} scans/s, {workers} worker{'s' * (workers != 1)}")
    print("\n".join(lines))
