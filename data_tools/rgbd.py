"""RGB-D pairs -> points: finding pairs, reading intrinsics, back-projection and face cropping.

An RGB-D item is a colour image, a registered 16-bit depth image of the same size and a
pinhole intrinsics JSON. :func:`find_rgbd` recognises these layouts:

- ``<stem>_color.png`` beside ``<stem>_depth.png`` (also ``_colour``/``_rgb`` and ``.jpg``
  colour). Either file may be named; a directory is searched for every such pair.
- A directory with ``color/`` (or ``rgb/``, ``image/``) and ``depth/`` subfolders whose files
  match by stem (``color/000.jpg`` + ``depth/000.png``, the Open3D/Redwood layout).
- A directory holding exactly one colour-named and one depth-named image (names containing
  ``color``/``colour``/``rgb`` and ``depth``).

The intrinsics JSON is looked up beside the colour image (for ``color/`` layouts, in the
directory above): ``<stem>_intrinsics.json``, ``<stem>_camera.json``, ``intrinsics.json``,
``camera_intrinsic.json``, ``camera.json``, else the one ``*intrinsic*.json`` there. Two
formats are read (:func:`load_intrinsics`): Open3D's ``PinholeCameraIntrinsic`` (``width``,
``height``, column-major ``intrinsic_matrix``) and a plain one (``fx fy cx cy width height``,
optional ``depth_scale``).

Depth: uint16 PNG, ``metres = value / depth_scale``, 0 = no data. ``depth_scale`` comes from
the argument, else the intrinsics JSON, else 1000 (millimetres, Open3D's default). A float
image (mode ``F``, e.g. TIFF) is taken as metres. Colour and depth must be registered 1:1.

Back-projection uses the OpenCV pinhole model (pixel (row i, column j) centred at (j, i), the
convention of ``cx = (W - 1) / 2``) and returns points in the scan frame shared with meshes:
y up, z toward the viewer, the camera at the origin looking along -z (OpenCV's y and z negated).

Cropping (:class:`RgbdCrop`, default ``"auto"``): an optional pixel ``box`` and metric
``depth_range`` restrict the valid pixels; "flying" pixels (a depth jump of more than
``EDGE_REL`` of the depth to both neighbours on a row or a column: the mixed depths sensors
report between a foreground and a background) are dropped (``drop_edges``). Then, with
``foreground``, the pixels are split into 4-connected regions at every depth jump, and the
region nearest to the camera (2nd depth percentile) among those reaching the central half of
the (boxed) image is kept, with its own rim pixels, limited to ``band`` metres behind its
front. For a face in front of a sensor, that is the head and whatever touches it within the
band (hair, neck, shoulders); a nearer object off-centre is ignored.
The back-projected points then go to ``points.splat_points`` (z-buffer, no blending across
depth edges) after canonicalisation.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_tools.points import PointScan
from pcgan.errors import PcganError

log = logging.getLogger(__name__)

DEFAULT_DEPTH_SCALE = 1000.0   # depth units per metre when neither argument nor JSON says (Open3D's default)
EDGE_REL = 0.03                # a neighbour depth differing by more than this fraction is across an edge
MIN_REGION_FRAC = 0.002        # auto crop: regions smaller than this fraction of the image are noise
MIN_VALID_PX = 50              # fewer valid depth pixels than this (after cropping) is an error

COLOR_SUFFIXES = (".png", ".jpg", ".jpeg")
_COLOR_TAGS = ("color", "colour", "rgb")
_COLOR_DIRS = ("color", "colour", "rgb", "image")
_INTRINSICS_NAMES = ("intrinsics.json", "camera_intrinsic.json", "camera.json")


@dataclass(frozen=True)
class RgbdInput:
    """One RGB-D capture found by :func:`find_rgbd`."""

    color: Path        # colour image (8-bit RGB)
    depth: Path        # 16-bit depth image registered to the colour image
    intrinsics: Path   # pinhole intrinsics JSON
    name: str          # short name for messages and dataset listings


@dataclass(frozen=True)
class RgbdCrop:
    """Which depth pixels of an RGB-D capture become points (see the module notes)."""

    box: tuple[int, int, int, int] | None = None       # pixel box x0 y0 x1 y1 (end exclusive); None: whole image
    depth_range: tuple[float, float] | None = None     # keep near <= depth <= far, metres; None: all
    foreground: bool = True                            # keep only the nearest central region
    band: float | None = 0.4                           # foreground: metres kept behind its front; None: no limit
    drop_edges: bool = True                            # drop pixels at depth edges (flying pixels)


def parse_crop(text: str) -> RgbdCrop:
    """Parse a crop spec for the command line: ``auto`` (default foreground crop), ``none``
    (all valid pixels), or ``+``-joined items ``box=X0,Y0,X1,Y1``, ``depth=NEAR,FAR`` (metres),
    ``band=METRES``, ``auto`` (add the foreground crop to a box/range). Example:
    ``box=160,80,480,400+depth=0.3,1.2+auto``."""
    text = text.strip().lower()
    if text in ("auto", ""):
        return RgbdCrop()
    if text == "none":
        return RgbdCrop(foreground=False)
    box = depth_range = None
    band = RgbdCrop.band
    foreground = False
    for item in text.replace(";", "+").split("+"):
        key, _, val = item.strip().partition("=")
        try:
            nums = [float(x) for x in val.split(",")] if val else []
        except ValueError:
            raise PcganError(f"crop item {item!r}: values must be numbers") from None
        if key == "auto" and not val:
            foreground = True
        elif key == "box" and len(nums) == 4:
            box = tuple(int(round(x)) for x in nums)
            if box[2] <= box[0] or box[3] <= box[1]:
                raise PcganError(f"crop box {box}: needs x0 < x1 and y0 < y1")
        elif key == "depth" and len(nums) == 2 and 0 <= nums[0] < nums[1]:
            depth_range = (nums[0], nums[1])
        elif key == "band" and len(nums) == 1 and nums[0] > 0:
            band = nums[0]
        else:
            raise PcganError(f"crop item {item!r}: use auto, none, box=X0,Y0,X1,Y1, depth=NEAR,FAR or band=METRES "
                             f"(joined with '+')")
    return RgbdCrop(box=box, depth_range=depth_range, foreground=foreground, band=band)


# ---------------------------------------------------------------------------------------------
# Intrinsics


def load_intrinsics(path) -> tuple[np.ndarray, int | None, int | None, float | None]:
    """Read a pinhole intrinsics JSON -> ``(K [3, 3] float64, width, height, depth_scale)``.

    Accepts Open3D's ``PinholeCameraIntrinsic`` JSON (``intrinsic_matrix``: 9 numbers,
    column-major; ``width``, ``height``) and the plain form (``fx``, ``fy``, ``cx``, ``cy``,
    ``width``, ``height``, optional ``depth_scale``). A nested 3x3 ``K``/``intrinsic_matrix``
    is read row-major. Width/height/depth_scale are None when the file does not give them.
    """
    path = Path(path)
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise PcganError(f"{path}: no such intrinsics file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PcganError(f"{path}: not a readable intrinsics JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(d, dict):
        raise PcganError(f"{path}: intrinsics JSON must be an object with fx fy cx cy or intrinsic_matrix")
    try:
        mat = d.get("intrinsic_matrix", d.get("K"))
        if mat is not None:
            a = np.asarray(mat, dtype=np.float64)
            if a.shape == (9,):
                K = a.reshape(3, 3).T          # Open3D stores it column-major
            elif a.shape == (3, 3):
                K = a
            else:
                raise PcganError(f"{path}: intrinsic_matrix has shape {list(a.shape)}, expected 9 numbers or 3x3")
        elif all(k in d for k in ("fx", "fy", "cx", "cy")):
            K = np.array([[d["fx"], 0, d["cx"]], [0, d["fy"], d["cy"]], [0, 0, 1]], dtype=np.float64)
        else:
            raise PcganError(f"{path}: intrinsics need 'intrinsic_matrix' (Open3D) or fx fy cx cy; "
                             f"found keys {sorted(d)}")
        width = int(d["width"]) if "width" in d else None
        height = int(d["height"]) if "height" in d else None
        scale = float(d["depth_scale"]) if d.get("depth_scale") is not None else None
    except (TypeError, ValueError) as exc:
        raise PcganError(f"{path}: intrinsics values are not numbers ({exc})") from None
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise PcganError(f"{path}: focal lengths must be positive finite numbers (fx={K[0, 0]}, fy={K[1, 1]})")
    if (width is not None and width <= 0) or (height is not None and height <= 0):
        raise PcganError(f"{path}: width and height must be positive (got {width}x{height})")
    if scale is not None and not scale > 0:
        raise PcganError(f"{path}: depth_scale must be positive (got {scale})")
    return K, width, height, scale


# ---------------------------------------------------------------------------------------------
# Finding RGB-D items


def _tag_split(stem: str, tags) -> str | None:
    """'TUM_color' -> 'TUM' when the stem ends with one of tags after _ or -."""
    low = stem.lower()
    for t in tags:
        for sep in ("_", "-", "."):
            if low.endswith(sep + t):
                return stem[: -len(t) - 1]
    return None


def _find_intrinsics(folder: Path, stem: str | None) -> Path | None:
    names = ([f"{stem}_intrinsics.json", f"{stem}_camera.json"] if stem else []) + list(_INTRINSICS_NAMES)
    for n in names:
        if (folder / n).is_file():
            return folder / n
    found = sorted(p for p in folder.glob("*.json") if "intrinsic" in p.name.lower())
    return found[0] if len(found) == 1 else None


def _item(color: Path, depth: Path, folder: Path, stem: str | None, name: str) -> RgbdInput:
    intr = _find_intrinsics(folder, stem)
    if intr is None:
        raise PcganError(f"{color}: RGB-D pair has no intrinsics JSON in {folder} (write intrinsics.json with "
                         f"fx fy cx cy width height depth_scale, or an Open3D PinholeCameraIntrinsic JSON)")
    return RgbdInput(color=color, depth=depth, intrinsics=intr, name=name)


def _pair_from_file(path: Path) -> RgbdInput | None:
    """A ``*_color.*`` or ``*_depth.png`` file -> its item, or None if the name does not say."""
    stem = _tag_split(path.stem, _COLOR_TAGS)
    if stem is not None:
        for sep in ("_", "-", "."):
            depth = path.with_name(f"{stem}{sep}depth.png")
            if depth.is_file():
                return _item(path, depth, path.parent, stem, stem)
        raise PcganError(f"{path}: colour image has no depth partner ({stem}_depth.png)")
    stem = _tag_split(path.stem, ("depth",))
    if stem is not None:
        for sep in ("_", "-", "."):
            for tag in _COLOR_TAGS:
                for ext in COLOR_SUFFIXES:
                    color = path.with_name(f"{stem}{sep}{tag}{ext}")
                    if color.is_file():
                        return _item(color, path, path.parent, stem, stem)
        raise PcganError(f"{path}: depth image has no colour partner ({stem}_color.png or .jpg)")
    return None


def _items_in_dir(folder: Path) -> list[RgbdInput]:
    subs = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    cdir = next((subs[n] for n in _COLOR_DIRS if n in subs), None)
    if cdir is not None and "depth" in subs:
        depths = {p.stem: p for p in subs["depth"].iterdir() if p.suffix.lower() == ".png"}
        items = []
        for c in sorted(p for p in cdir.iterdir() if p.suffix.lower() in COLOR_SUFFIXES):
            if c.stem in depths:
                items.append(_item(c, depths[c.stem], folder, None, f"{folder.name}/{c.stem}"))
        if not items:
            raise PcganError(f"{folder}: {cdir.name}/ and depth/ hold no files with matching names")
        return items
    files = sorted(p for p in folder.iterdir() if p.is_file())
    items = []
    for c in files:
        if c.suffix.lower() in COLOR_SUFFIXES and _tag_split(c.stem, _COLOR_TAGS) is not None:
            try:
                item = _pair_from_file(c)
            except PcganError:
                continue
            if item is not None:
                items.append(item)
    if items:
        return items
    colors = [p for p in files if p.suffix.lower() in COLOR_SUFFIXES and any(t in p.stem.lower() for t in _COLOR_TAGS)]
    depths = [p for p in files if p.suffix.lower() == ".png" and "depth" in p.stem.lower()]
    if len(colors) == 1 and len(depths) == 1:
        return [_item(colors[0], depths[0], folder, None, folder.name)]
    return []


def looks_like_rgbd(path) -> bool:
    """Whether :func:`find_rgbd` would take ``path`` as (holding) RGB-D input. Never raises."""
    path = Path(path)
    try:
        if path.is_dir():
            return bool(_items_in_dir(path))
        if path.is_file() and path.suffix.lower() in COLOR_SUFFIXES:
            return _pair_from_file(path) is not None
    except (PcganError, OSError):
        return False
    return False


def find_rgbd(paths) -> list[RgbdInput]:
    """RGB-D items from files and directories (layouts in the module notes), without duplicates.

    Raises :class:`PcganError` naming a path that is missing, a colour/depth file without its
    partner or intrinsics, or a directory with no RGB-D pair in it.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out: list[RgbdInput] = []
    seen: set[tuple[Path, Path]] = set()
    for p in map(Path, paths):
        if p.is_dir():
            items = _items_in_dir(p)
            if not items:
                raise PcganError(f"{p}: no RGB-D pair found (expected NAME_color.png + NAME_depth.png, or color/ "
                                 f"and depth/ folders, plus an intrinsics JSON)")
        elif p.is_file():
            item = _pair_from_file(p)
            if item is None:
                raise PcganError(f"{p}: not part of an RGB-D pair (name it NAME_color.png / NAME_depth.png)")
            items = [item]
        else:
            raise PcganError(f"{p}: no such file or directory")
        for it in items:
            key = (it.color.resolve(), it.depth.resolve())
            if key not in seen:
                seen.add(key)
                out.append(it)
    return out


# ---------------------------------------------------------------------------------------------
# Loading and back-projection


def _open_image(path: Path, what: str):
    from PIL import Image
    try:
        im = Image.open(path)
        im.load()
    except FileNotFoundError:
        raise PcganError(f"{path}: no such {what} image") from None
    except Exception as exc:   # PIL raises OSError, SyntaxError, ValueError... for corrupt files
        raise PcganError(f"{path}: unreadable {what} image ({' '.join(str(exc).split())})") from None
    return im


def read_depth(path, depth_scale: float) -> np.ndarray:
    """Depth image -> metres ``[H, W]`` float64, 0 where there is no data."""
    path = Path(path)
    im = _open_image(path, "depth")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        raw = np.asarray(im, dtype=np.uint16).astype(np.float64)
    elif im.mode == "I":
        raw = np.asarray(im).astype(np.float64)
        if raw.max(initial=0) > 65535 or raw.min(initial=0) < 0:
            raise PcganError(f"{path}: depth values outside 0..65535; expected a 16-bit depth PNG")
    elif im.mode == "F":
        m = np.asarray(im, dtype=np.float64)
        return np.where(np.isfinite(m) & (m > 0), m, 0.0)
    elif im.mode in ("L", "P", "1", "LA"):
        raise PcganError(f"{path}: depth image is 8-bit ({im.mode}); expected a 16-bit depth PNG "
                         f"(value / depth_scale = metres)")
    else:
        raise PcganError(f"{path}: depth image has mode {im.mode} ({len(im.getbands())} channels); expected a "
                         f"single-channel 16-bit depth PNG")
    return raw / depth_scale


def read_color(path) -> np.ndarray:
    """Colour image -> ``[H, W, 3]`` float32 in [0, 1] (8-bit values / 255)."""
    path = Path(path)
    im = _open_image(path, "colour")
    if im.mode.startswith("I") or im.mode == "F":
        raise PcganError(f"{path}: colour image has mode {im.mode}; expected 8-bit RGB")
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def load_rgbd(
    item: RgbdInput,
    *,
    depth_scale: float | None = None,     # depth units per metre; None: from the JSON, else 1000
    depth_trunc: float | None = None,     # drop depths beyond this many metres; None: keep all
    crop: "RgbdCrop | str" = "auto",      # RgbdCrop, or a spec string for parse_crop
) -> PointScan:
    """Back-project one RGB-D capture into coloured points in the scan frame (metres).

    Returns a :class:`PointScan` with ``points [N, 3]`` float64 (y up, z toward the viewer,
    camera at the origin), ``colors [N, 3]`` float32 from the registered colour image, units
    ``"m"`` and ``info`` (crop box, pixels kept, depth scale, image size). Raises
    :class:`PcganError` naming the file for unreadable images, 8-bit or multi-channel depth,
    colour/depth size mismatch, intrinsics of another size, and no valid depth after cropping.
    """
    if isinstance(crop, str):
        crop = parse_crop(crop)
    K, iw, ih, json_scale = load_intrinsics(item.intrinsics)
    scale = depth_scale or json_scale or DEFAULT_DEPTH_SCALE
    color = read_color(item.color)                                   # [H, W, 3]
    depth = read_depth(item.depth, scale)                            # [H, W] metres
    H, W = depth.shape
    if color.shape[:2] != (H, W):
        raise PcganError(f"{item.depth}: depth image is {W}x{H} but colour image {item.color.name} is "
                         f"{color.shape[1]}x{color.shape[0]}; they must be registered 1:1 (same size)")
    if (iw is not None and iw != W) or (ih is not None and ih != H):
        raise PcganError(f"{item.intrinsics}: intrinsics are for {iw}x{ih} images but {item.depth.name} is {W}x{H}")

    valid = depth > 0
    if depth_trunc is not None:
        valid &= depth <= depth_trunc
    if not valid.any():
        beyond = " or beyond depth_trunc" if depth_trunc else ""
        raise PcganError(f"{item.depth}: no valid depth (all pixels are 0{beyond})")
    keep = _crop_mask(depth, valid, crop)
    n_keep = int(keep.sum())
    if n_keep < MIN_VALID_PX:
        raise PcganError(f"{item.depth}: only {n_keep} depth pixels left after cropping ({_crop_text(crop)}); "
                         f"need at least {MIN_VALID_PX} (try --crop none or a wider depth range)")

    i, j = np.nonzero(keep)
    z = depth[i, j]
    pix = np.stack([j, i, np.ones_like(i)], axis=0).astype(np.float64)       # [3, N] homogeneous pixels
    cam = (np.linalg.inv(K) @ pix) * z                                       # [3, N] OpenCV camera frame
    pts = (cam * np.array([[1.0], [-1.0], [-1.0]])).T                        # y up, z toward the viewer
    cols = color[i, j]
    box = (int(j.min()), int(i.min()), int(j.max()) + 1, int(i.max()) + 1)
    log.info("%s: %d of %d pixels kept (box %s, depth %.3f-%.3f m)", item.name, n_keep, H * W, box, z.min(), z.max())
    return PointScan(points=pts, colors=cols, normals=None, source=str(item.color), units="m",
                     info={"crop_box": box, "pixels": n_keep, "depth_scale": scale, "image_size": (W, H),
                           "depth_range_m": (float(z.min()), float(z.max()))})


def _crop_text(crop: RgbdCrop) -> str:
    parts = []
    if crop.box:
        parts.append("box=" + ",".join(map(str, crop.box)))
    if crop.depth_range:
        parts.append("depth=" + ",".join(map(str, crop.depth_range)))
    if crop.foreground:
        parts.append("auto")
    return "+".join(parts) or "none"


def _jumps(depth: np.ndarray, valid: np.ndarray, rel: float):
    """Depth jumps between 4-neighbours: (right, left, down, up) bool maps ``[H, W]``, each true
    where that neighbour is valid and differs by more than ``rel`` of the nearer depth."""
    H, W = depth.shape
    right = np.zeros((H, W), bool)
    down = np.zeros((H, W), bool)
    with np.errstate(invalid="ignore"):
        right[:, :-1] = valid[:, :-1] & valid[:, 1:] & (
            np.abs(depth[:, :-1] - depth[:, 1:]) > rel * np.minimum(depth[:, :-1], depth[:, 1:]))
        down[:-1] = valid[:-1] & valid[1:] & (np.abs(depth[:-1] - depth[1:]) > rel * np.minimum(depth[:-1], depth[1:]))
    left = np.zeros((H, W), bool)
    left[:, 1:] = right[:, :-1]
    up = np.zeros((H, W), bool)
    up[1:] = down[:-1]
    return right, left, down, up


def depth_edges(depth: np.ndarray, valid: np.ndarray, rel: float = EDGE_REL) -> tuple[np.ndarray, np.ndarray]:
    """Depth discontinuities of a depth map ``[H, W]`` (metres).

    Returns ``(edge, flying)``, both ``[H, W]`` bool: ``edge`` marks pixels with a 4-neighbour
    more than ``rel`` of the depth away (both sides of every discontinuity); ``flying`` marks
    pixels that jump on two opposite sides (left and right, or up and down), the mixed depths
    sensors report between a foreground and a background."""
    right, left, down, up = _jumps(depth, valid, rel)
    edge = right | left | down | up
    flying = (right & left) | (down & up)
    return edge, flying


def _crop_mask(depth: np.ndarray, valid: np.ndarray, crop: RgbdCrop) -> np.ndarray:
    """Which pixels become points, per :class:`RgbdCrop`. ``[H, W]`` bool."""
    H, W = depth.shape
    keep = valid.copy()
    x0, y0, x1, y1 = 0, 0, W, H
    if crop.box is not None:
        x0, y0 = max(crop.box[0], 0), max(crop.box[1], 0)
        x1, y1 = min(crop.box[2], W), min(crop.box[3], H)
        if x1 <= x0 or y1 <= y0:
            raise PcganError(f"crop box {crop.box} lies outside the {W}x{H} image")
        inside = np.zeros_like(keep)
        inside[y0:y1, x0:x1] = True
        keep &= inside
    if crop.depth_range is not None:
        keep &= (depth >= crop.depth_range[0]) & (depth <= crop.depth_range[1])
    edge, flying = depth_edges(depth, valid)
    if crop.drop_edges:
        keep &= ~flying
    if not crop.foreground or not keep.any():
        return keep

    from scipy import ndimage
    labels, n = ndimage.label(keep & ~edge)                          # 4-connected regions between edges
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    central = np.zeros_like(keep)
    cw, ch = (x1 - x0) // 4, (y1 - y0) // 4
    central[y0 + ch:y1 - ch, x0 + cw:x1 - cw] = True
    in_centre = np.bincount(labels[central].ravel(), minlength=n + 1)
    min_size = max(MIN_VALID_PX, MIN_REGION_FRAC * H * W)
    best, best_near = 0, np.inf
    for lab in np.flatnonzero((sizes >= min_size) & (in_centre > 0)):
        if lab == 0:
            continue
        near = np.percentile(depth[labels == lab], 2)
        if near < best_near:
            best, best_near = lab, near
    if best == 0:
        log.info("auto crop: no region reaches the image centre; keeping all valid pixels")
        return keep
    region = labels == best
    # take back the region's own rim: edge pixels whose depth continues a neighbouring region pixel
    right, left, down, up = _jumps(depth, valid, EDGE_REL)
    rim = np.zeros_like(region)
    rim[:, :-1] |= region[:, 1:] & ~right[:, :-1]
    rim[:, 1:] |= region[:, :-1] & ~left[:, 1:]
    rim[:-1] |= region[1:] & ~down[:-1]
    rim[1:] |= region[:-1] & ~up[1:]
    region |= rim & keep & edge
    if crop.band is not None:
        region &= depth <= best_near + crop.band
    return region
