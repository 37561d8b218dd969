"""Image decoding and preprocessing: the one pipeline shared by export parity, calibration, predict
and eval (Pillow + numpy; no torch).

Decoding applies EXIF orientation and converts every Pillow mode to RGB correctly: RGBA/LA/PA and P
with transparency are composited on black (colour x alpha, so whatever RGB hides under transparent
pixels never reaches the model; opaque pixels are unchanged, as with TF's decoders which drop alpha);
CMYK through Pillow's ICC-free conversion, Adobe-inverted JPEGs included; 16-bit greyscale rescaled by
1/257 rather than clipped to white.

Memory: :func:`load` crops and resizes in the file's own mode before converting to RGB, and JPEGs are
decoded at a reduced scale (Pillow ``draft``), so a huge image costs one decoded copy, not several.
That copy is bounded too (issue #20): the size in the file's header is checked before anything is decoded
against :func:`max_pixels` (default :data:`DEFAULT_MAX_MEGAPIXELS`, environment variable
:data:`MAX_MEGAPIXELS_ENV`). A JPEG over the bound is decoded at the largest DCT scale (1/2, 1/4, 1/8) that
fits it; any other image over the bound is refused (predict: an error; eval and calibration: skipped
with a warning). Images within the bound are decoded exactly as before.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import MobilenetEdgeError, UsageError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

#: Default bound on the decoded size of one image, in megapixels (1e6 pixels). Pillow holds RGB at 4 bytes
#: per pixel, so one 50-megapixel decode is 200 MB (up to twice that while an EXIF rotation is applied):
#: within a 1 GB Raspberry Pi beside the runtime and model. It admits the 48-50 MP photos of current phone
#: cameras and most camera bodies' full frames; larger JPEGs are decoded at a reduced scale instead.
#: Pillow's own guard (warning at 89 MP, error at 179 MP) let a 1.5 MB, 23000 x 23000 PNG (529 MP, 2.1 GB
#: decoded as RGB) through; it is replaced by this bound while our decoder opens a file.
DEFAULT_MAX_MEGAPIXELS = 50.0
#: Environment variable that sets the bound (megapixels, a number > 0), e.g. ``MOBILENET_EDGE_MAX_MEGAPIXELS=200``.
MAX_MEGAPIXELS_ENV = "MOBILENET_EDGE_MAX_MEGAPIXELS"
#: JPEG DCT scales Pillow's ``draft`` can decode at (libjpeg: 1/1, 1/2, 1/4, 1/8)
_JPEG_SCALES = (1, 2, 4, 8)


def max_pixels() -> int:
    """The decoded-size bound in pixels: ``MOBILENET_EDGE_MAX_MEGAPIXELS`` x 1e6, else the default (50 MP).

    Raises:
        UsageError: the variable is set but is not a finite number > 0 (message names it).
    """
    raw = os.environ.get(MAX_MEGAPIXELS_ENV, "").strip()
    if not raw:
        return int(DEFAULT_MAX_MEGAPIXELS * 1e6)
    try:
        mp = float(raw)
    except ValueError:
        mp = math.nan
    if not (math.isfinite(mp) and mp > 0):
        raise UsageError(f"{MAX_MEGAPIXELS_ENV} must be a number of megapixels > 0, got {raw!r}")
    return max(1, int(mp * 1e6))


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become the model input; stored in ONNX metadata and manifest.json.

    ``x = (pixel - mean) / std`` with pixels in [0, 255] after a central crop that keeps ``crop`` of
    each side and a resize of the crop to ``res`` x ``res`` (aspect not kept, as TF-slim's
    ``central_crop`` + ``resize_bilinear`` evaluation). TF-slim MobileNet: mean = std = 127.5
    (``x/127.5 - 1``), crop 0.875, bilinear (tensorflow/models research/slim inception_preprocessing).
    """

    res: int = 224
    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    crop: float = 0.875
    resize: str = "tf_bilinear"
    channel_order: str = "RGB"
    layout: str = "NCHW"
    dtype: str = "float32"
    resize_rule: str = field(default="central_crop(crop) then resize to res x res (aspect not kept)")

    def __post_init__(self) -> None:
        if not 0.0 < self.crop <= 1.0:
            raise UsageError(f"crop must be in (0, 1], got {self.crop}")
        if self.resize not in RESIZE_MODES:
            raise UsageError(f"resize must be one of {list(RESIZE_MODES)}, got {self.resize!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise UsageError(f"layout must be NCHW or NHWC, got {self.layout!r}")
        object.__setattr__(self, "mean", tuple(float(v) for v in _three(self.mean, "mean")))
        object.__setattr__(self, "std", tuple(float(v) for v in _three(self.std, "std")))
        # nan/inf would turn every score into nan (and JSON output into invalid NaN)
        if not all(math.isfinite(v) for v in self.mean):
            raise UsageError(f"mean must be finite, got {list(self.mean)}")
        if not all(math.isfinite(v) and v != 0 for v in self.std):
            raise UsageError(f"std must be finite and non-zero, got {list(self.std)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessing:
        """From a manifest's or ONNX metadata's ``preprocessing`` (unknown keys ignored).

        Raises:
            MobilenetEdgeError: ``d`` is not a JSON object (e.g. a number).
        """
        if not isinstance(d, dict):
            raise MobilenetEdgeError(f"'preprocessing' must be a JSON object, got {type(d).__name__} {d!r:.40}")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


#: ``tf_bilinear``: TF-slim's evaluation resize (integer central crop + TF1 ``resize_bilinear`` with
#: align_corners=False, half_pixel_centers=False: no anti-aliasing), the preprocessing Google's
#: published accuracies were measured with. The others are Pillow filters (anti-aliased when shrinking).
RESIZE_MODES = ("tf_bilinear", *_RESAMPLE)


def _three(v: Sequence[float] | float, name: str) -> tuple[float, ...]:
    if isinstance(v, (int, float)):
        return (float(v),) * 3
    v = tuple(v)
    if len(v) == 1:
        return v * 3
    if len(v) != 3:
        raise UsageError(f"{name} needs 1 or 3 values, got {list(v)}")
    return v


def skipped_message(path: str | Path, exc: Exception) -> str:
    """The one wording of a skipped image, shared by eval, quantize and the fidelity report:
    ``skipped PATH: reason`` (printed after ``warning: ``); the path is not repeated in the reason."""
    msg = " ".join(str(exc).split())
    prefix = f"cannot decode image {path}: "
    if msg.startswith(prefix):
        msg = "cannot decode: " + msg[len(prefix):].replace(f" '{path}'", "")  # Pillow quotes the path again
    return f"skipped {path}: {msg}"


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def expand_paths(paths: Iterable[str | Path], *, recursive: bool = True) -> list[Path]:
    """Files and folders -> image files; folders expand to their images in sorted order.

    Raises:
        UsageError: a path that does not exist, or a folder holding no image file.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f for f in (p.rglob("*") if recursive else p.iterdir()) if f.is_file() and is_image_path(f)
            )
            if not found:
                raise UsageError(f"no image files ({', '.join(IMAGE_SUFFIXES[:4])}, ...) in folder {p}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise UsageError(f"no such file or folder: {p}")
    return out


def image_folder(path: str | Path, option: str = "") -> Path:
    """Check that ``path`` (given with ``option``, e.g. ``--calib``) is a folder; the one wording of every
    command that takes a folder of images (export, quantize, eval, bench --grid).

    Raises:
        UsageError: ``"--calib /x: no such folder"`` or ``"--calib photo.jpg is a file, expected a folder of
            images"``.
    """
    path = Path(path)
    what = f"{option} {path}" if option else str(path)
    if path.is_file():
        raise UsageError(f"{what} is a file, expected a folder of images")
    if not path.is_dir():
        raise UsageError(f"{what}: no such folder")
    return path


def open_rgb(path: str | Path, *, target: int | None = None) -> Image.Image:
    """Decode an image file to an RGB ``PIL.Image`` with EXIF orientation applied.

    Args:
        path: image file.
        target: if given, JPEGs are decoded at a reduced scale no smaller than ``target`` pixels per
            side (Pillow ``draft``), which bounds memory on huge photos.
    Raises:
        UsageError: the file is not a decodable image (message names the file and the reason).
    """
    return to_rgb(open_image(path, target=target))


def open_image(path: str | Path, *, target: int | None = None) -> Image.Image:
    """Decode an image file in its own Pillow mode (``L``, ``I;16``, ``CMYK``, ...), EXIF orientation
    applied. Use :func:`to_rgb` (or :func:`preprocess`, which accepts any mode) afterwards.

    Raises:
        UsageError: the file is missing or not a decodable image (message names the file and reason).
    """
    path = Path(path)
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our bound replaces Pillow's, checked below before any decoding
            try:
                img = Image.open(path)  # reads the header only
            finally:
                Image.MAX_IMAGE_PIXELS = old
            if target and img.format == "JPEG":
                img.draft("RGB" if img.mode != "CMYK" else "CMYK", (target, target))
            _bound(img, path, limit)
            img.load()
        if img.size[0] < 1 or img.size[1] < 1:
            raise UsageError(f"cannot decode image {path}: empty image {img.size}")
        # in place: a copy of a 10000x10000 image would double the memory
        ImageOps.exif_transpose(img, in_place=True)
        return img
    except UsageError:
        raise
    except FileNotFoundError:
        raise UsageError(f"cannot decode image {path}: no such file") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        reason = str(e) or type(e).__name__
        raise UsageError(f"cannot decode image {path}: {reason}") from None


def _bound(img: Image.Image, path: Path, limit: int) -> None:
    """Before decoding: a JPEG over ``limit`` pixels gets the largest DCT scale that fits (Pillow ``draft``);
    any image still over it raises UsageError ``cannot decode image PATH: W x H = N megapixels, over ...``."""
    w, h = img.size
    if w * h > limit and img.format == "JPEG":
        for s in _JPEG_SCALES:
            if math.ceil(w / s) * math.ceil(h / s) <= limit:
                # draft takes the largest of 1/8..1/1 not above min(w // w', h // h'): exactly 1/s here
                img.draft("RGB" if img.mode != "CMYK" else "CMYK", (max(1, w // s), max(1, h // s)))
                break
    if img.size[0] * img.size[1] > limit:
        raise UsageError(
            f"cannot decode image {path}: {w} x {h} = {w * h / 1e6:.1f} megapixels, over the "
            f"{limit / 1e6:g}-megapixel limit (set {MAX_MEGAPIXELS_ENV} to raise it)")


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB without clipping 16-bit data or inverting CMYK."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        # 16-bit data (PNG) span 0..65535; "I" from 8-bit sources stays within 0..255.
        scale = 257.0 if (mode.startswith("I;16") or a.max(initial=0) > 255) else 1.0
        a8 = np.clip(np.rint(a / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        if a.max(initial=0) <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # composite on black: colour * alpha / 255, rounded (uint16 arithmetic, one small copy)
        a = np.asarray(img.convert("RGBA"))
        rgb = (a[..., :3].astype(np.uint16) * a[..., 3:4] + 127) // 255
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    return img.convert("RGB")


# Modes that Pillow resizes with the requested filter (P and 1 fall back to nearest: convert first).
_RESIZE_NATIVE = frozenset({"RGB", "L", "RGBA", "LA", "CMYK", "I", "I;16", "F"})


def preprocess(img: Image.Image, prep: Preprocessing) -> np.ndarray:
    """Image (any Pillow mode) -> model input for one image.

    Central crop keeping ``prep.crop`` of each side, resize to ``res`` x ``res`` with ``prep.resize``
    (one Pillow resize with a source box, so the crop costs no copy), RGB conversion (done after the
    resize for modes Pillow resizes natively, which bounds memory on huge images), then
    ``(pixel - mean) / std``.

    Returns:
        (3, res, res) float32 for layout NCHW, (res, res, 3) for NHWC.
    """
    if prep.resize == "tf_bilinear":
        x = tf_crop_resize(img, prep.crop, prep.res)
    else:
        if img.mode not in _RESIZE_NATIVE:
            img = to_rgb(img)
        w, h = img.size
        cw, ch = w * prep.crop, h * prep.crop
        box = ((w - cw) / 2, (h - ch) / 2, (w + cw) / 2, (h + ch) / 2)
        img = to_rgb(img.resize((prep.res, prep.res), _RESAMPLE[prep.resize], box=box))
        x = np.asarray(img, dtype=np.float32)
    x = (x - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    if prep.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.float32)


def tf_crop_resize(img: Image.Image, crop: float, res: int) -> np.ndarray:
    """TF-slim evaluation crop + resize of an image (any mode) -> (res, res, 3) float32 RGB in 0..255.

    ``tf.image.central_crop``: start = int((side - side * crop) / 2), size = side - 2 * start; then
    TF1 ``tf.image.resize_bilinear(align_corners=False)``: source = dst * (in / out), floor/ceil
    neighbours clamped to the edge, linear weights (tensorflow/models research/slim
    preprocessing/inception_preprocessing.py ``preprocess_for_eval``). Only the <= 2 x res source rows
    that the interpolation reads are converted to arrays, so a huge image costs no second copy.
    """
    w, h = img.size
    top, left = int((h - h * crop) / 2), int((w - w * crop) / 2)
    ch, cw = h - 2 * top, w - 2 * left

    def axis(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(res, dtype=np.float64) * (n_in / res)
        lo = np.floor(src).astype(np.int64)
        return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

    y0, y1, wy = axis(ch)
    x0, x1, wx = axis(cw)
    rows = np.unique(np.concatenate([y0, y1]))
    strip = np.concatenate(
        [np.asarray(to_rgb(img.crop((left, top + int(r), left + cw, top + int(r) + 1)))) for r in rows]
    ).astype(np.float32)
    top_rows, bot_rows = strip[np.searchsorted(rows, y0)], strip[np.searchsorted(rows, y1)]
    wx = wx[None, :, None]
    top_i = top_rows[:, x0] * (1 - wx) + top_rows[:, x1] * wx
    bot_i = bot_rows[:, x0] * (1 - wx) + bot_rows[:, x1] * wx
    wy = wy[:, None, None]
    return top_i * (1 - wy) + bot_i * wy


def load(path: str | Path, prep: Preprocessing) -> np.ndarray:
    """Decode + preprocess one file: (3, res, res) or (res, res, 3) float32 per ``prep.layout``.

    Raises:
        UsageError: a missing or undecodable file.
    """
    # JPEG draft (DCT-domain downscale) only for photos much larger than needed: the decoded image
    # keeps >= 2x the pixels the crop needs per side, so the final resize still does the filtering
    # (drafting down to 1x cost 1-2 points of top-1 on imagenet-calib with the reference models).
    # tf_bilinear samples the full decode as TensorFlow does (no draft): it reproduces the reference.
    target = None if prep.resize == "tf_bilinear" else 2 * int(np.ceil(prep.res / prep.crop))
    return preprocess(open_image(path, target=target), prep)


def iter_batches(
    paths: Sequence[Path], prep: Preprocessing, *, batch: int = 1, on_error=None
) -> Iterator[tuple[list[Path], np.ndarray]]:
    """Yield (paths, (B, ...) float32) batches; undecodable files go to ``on_error(path, exc)``
    (skipped) when given, else raise. A bad ``MOBILENET_EDGE_MAX_MEGAPIXELS`` raises UsageError once, first."""
    max_pixels()  # a bad setting is one error, not one skipped image each
    buf_p: list[Path] = []
    buf_x: list[np.ndarray] = []
    for p in paths:
        try:
            x = load(p, prep)
        except UsageError as e:
            if on_error is None:
                raise
            on_error(p, e)
            continue
        buf_p.append(p)
        buf_x.append(x)
        if len(buf_p) == batch:
            yield buf_p, np.stack(buf_x)
            buf_p, buf_x = [], []
    if buf_p:
        yield buf_p, np.stack(buf_x)
