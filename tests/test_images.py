"""Image decoding and preprocessing (Pillow + numpy): modes, EXIF, bad files, memory, folder expansion.

Images are generated in tmp_path with known pixel values; expected values are computed here.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
from PIL import Image

from mobilenet_edge.core import images
from mobilenet_edge.core.errors import UsageError
from mobilenet_edge.core.images import Preprocessing

RAW = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "layout": "NHWC"}  # x == pixel values


def _prep(res: int, crop: float = 1.0, resize: str = "bilinear", **kw) -> Preprocessing:
    return Preprocessing(res=res, crop=crop, resize=resize, **{**RAW, **kw})


# -- preprocessing arithmetic ----------------------------------------------------------------------------


def test_central_crop_nearest_is_exact():
    a = np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8)
    x = images.preprocess(Image.fromarray(a), _prep(50, crop=0.5, resize="nearest"))
    np.testing.assert_array_equal(x, a[25:75, 25:75].astype(np.float32))  # central half of each side


def test_normalisation_and_layout():
    img = Image.new("RGB", (9, 7), (200, 100, 50))
    mean, std = (127.5, 100.0, 50.0), (127.5, 2.0, 10.0)
    nchw = images.preprocess(img, Preprocessing(res=4, mean=mean, std=std, layout="NCHW"))
    nhwc = images.preprocess(img, Preprocessing(res=4, mean=mean, std=std, layout="NHWC"))
    assert nchw.shape == (3, 4, 4) and nhwc.shape == (4, 4, 3) and nchw.dtype == np.float32
    want = [(200 - 127.5) / 127.5, 0.0, 0.0]
    np.testing.assert_allclose(nchw[:, 0, 0], want, atol=1e-6)
    np.testing.assert_array_equal(nchw.transpose(1, 2, 0), nhwc)


def test_preprocessing_validation():
    with pytest.raises(UsageError, match="crop"):
        Preprocessing(crop=0)
    with pytest.raises(UsageError, match="resize"):
        Preprocessing(resize="area")
    with pytest.raises(UsageError, match="std"):
        Preprocessing(std=(1, 0, 1))
    assert Preprocessing.from_dict(Preprocessing(res=160).to_dict()) == Preprocessing(res=160)


# -- modes -----------------------------------------------------------------------------------------------


def _roundtrip(tmp_path, img: Image.Image, name: str, **save) -> Image.Image:
    path = tmp_path / name
    img.save(path, **save)
    return images.open_rgb(path)


def test_exif_orientation_applied_before_resize(tmp_path):
    # stored 40 wide x 20 high: left half red, right half blue; EXIF 6 = display rotated 90 deg clockwise,
    # so the viewer sees 20 wide x 40 high with red on top and blue at the bottom
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = (255, 0, 0)
    a[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rot.jpg"
    Image.fromarray(a).save(path, exif=exif, quality=95)
    img = images.open_rgb(path)
    assert img.size == (20, 40)
    x = images.load(path, _prep(8))  # square resize after rotation: top rows red, bottom rows blue
    assert (x[:3, :, 0] > 200).all() and (x[:3, :, 2] < 60).all()
    assert (x[-3:, :, 2] > 200).all() and (x[-3:, :, 0] < 60).all()


def test_rgba_composited_on_black(tmp_path):
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (200, 100, 50, 255)  # opaque: unchanged
    a[0, 1] = (200, 100, 50, 0)  # transparent: black, whatever RGB it hides
    a[1, 0] = (200, 100, 50, 128)  # half: colour * 128/255
    a[1, 1] = (255, 255, 255, 0)
    out = np.asarray(_roundtrip(tmp_path, Image.fromarray(a, "RGBA"), "a.png"))
    np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    np.testing.assert_allclose(out[1, 0], np.array([200, 100, 50]) * 128 / 255, atol=1)
    np.testing.assert_array_equal(out[1, 1], [0, 0, 0])


def test_la_and_l(tmp_path):
    la = np.array([[[180, 255], [180, 0]]], np.uint8)
    out = np.asarray(_roundtrip(tmp_path, Image.fromarray(la, "LA"), "la.png"))
    np.testing.assert_array_equal(out[0], [[180, 180, 180], [0, 0, 0]])
    grey = np.array([[0, 77, 255]], np.uint8)
    out = np.asarray(_roundtrip(tmp_path, Image.fromarray(grey, "L"), "l.png"))
    np.testing.assert_array_equal(out[0], [[0, 0, 0], [77, 77, 77], [255, 255, 255]])


def test_palette_with_and_without_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([10, 20, 30, 200, 150, 100] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    out = np.asarray(_roundtrip(tmp_path, img, "p.png"))
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [200, 150, 100]])
    img.info["transparency"] = 1  # palette index 1 fully transparent -> black
    out = np.asarray(_roundtrip(tmp_path, img, "pt.png", transparency=1))
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [0, 0, 0]])
    out = np.asarray(_roundtrip(tmp_path, img, "pt.gif", transparency=1))
    np.testing.assert_array_equal(out[0], [[10, 20, 30], [0, 0, 0]])


def test_cmyk_jpeg_not_inverted(tmp_path):
    colours = [(255, 0, 0), (0, 160, 0), (20, 40, 220), (250, 250, 250)]
    a = np.repeat(np.array(colours, np.uint8)[None], 16, axis=0).repeat(16, axis=1)  # 16 x 64 blocks
    cmyk = Image.fromarray(a).convert("CMYK")
    path = tmp_path / "cmyk.jpg"
    cmyk.save(path, quality=100)
    assert Image.open(path).mode == "CMYK"
    out = np.asarray(images.open_rgb(path)).astype(int)
    for i, c in enumerate(colours):  # block centres; an inverted decode would give 255 - c
        np.testing.assert_allclose(out[8, 16 * i + 8], c, atol=12)


def test_16bit_png_rescaled_not_clipped(tmp_path):
    a = np.array([[0, 257 * 10, 257 * 128, 65535, 200]], np.uint16)  # 200/257 rounds to 1
    path = tmp_path / "g16.png"
    Image.fromarray(a).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(images.open_rgb(path))
    np.testing.assert_array_equal(out[0, :, 0], [0, 10, 128, 255, 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    x = images.load(path, _prep(5, resize="nearest"))  # resized in 16-bit, then converted
    np.testing.assert_array_equal(x[0, :, 0], [0, 10, 128, 255, 1])


def test_one_by_one_image(tmp_path):
    path = tmp_path / "px.png"
    Image.new("RGB", (1, 1), (12, 34, 56)).save(path)
    x = images.load(path, _prep(160, crop=0.875))
    assert x.shape == (160, 160, 3)
    np.testing.assert_allclose(x[80, 80], [12, 34, 56], atol=1)


# -- bad files -----------------------------------------------------------------------------------------------


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(UsageError, match=r"cannot decode image .*notes\.jpg"):
        images.load(path, _prep(32))


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    a = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(UsageError, match="cannot decode image .*cut.jpg"):
        images.load(path, _prep(32))


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(UsageError, match="cannot decode"):
        images.open_rgb(tmp_path / "empty.png")
    with pytest.raises(UsageError, match="cannot decode"):
        images.open_rgb(tmp_path / "missing.png")


# -- folders ---------------------------------------------------------------------------------------------------


def test_expand_paths_sorted(tmp_path):
    for name in ("b.jpg", "a.png", "sub/c.JPEG", "sub/a.bmp", "notes.txt", "Z.png"):
        p = tmp_path / name
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"x")
    got = images.expand_paths([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["Z.png", "a.png", "b.jpg", "sub/a.bmp", "sub/c.JPEG"]
    extra = tmp_path / "notes.txt"
    assert images.expand_paths([extra, tmp_path / "sub"])[0] == extra  # explicit files are kept as given
    (tmp_path / "none").mkdir()
    with pytest.raises(UsageError, match="no image files"):
        images.expand_paths([tmp_path / "none"])
    with pytest.raises(UsageError, match="no such file"):
        images.expand_paths([tmp_path / "ghost.jpg"])


def test_iter_batches_skips_bad_files(tmp_path):
    for i in range(5):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.png")
    (tmp_path / "2.png").write_text("broken")
    bad = []
    batches = list(images.iter_batches(images.expand_paths([tmp_path]), _prep(4), batch=2,
                                       on_error=lambda p, e: bad.append(p.name)))
    assert bad == ["2.png"]
    assert [[p.name for p in ps] for ps, _ in batches] == [["0.png", "1.png"], ["3.png", "4.png"]]
    assert batches[1][1].shape == (2, 4, 4, 3) and batches[1][1][1, 0, 0, 0] == 160
    with pytest.raises(UsageError):
        list(images.iter_batches([tmp_path / "2.png"], _prep(4)))


# -- memory on a 10000 x 10000 PNG ---------------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    from mobilenet_edge.core import images
    from mobilenet_edge.core.images import Preprocessing
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = images.load(sys.argv[1], Preprocessing(res=160))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "shape": list(x.shape), "centre": x[:, 120, 120].tolist()}))
    """
)


@pytest.mark.slow
def test_huge_png_costs_one_decoded_image(tmp_path):
    """Pillow keeps RGB at 4 bytes/pixel: one decoded 10000x10000 image is 400 MB. The whole load
    (decode, EXIF, crop+resize, RGB) must stay under 1.25 of that: a second full copy would double it."""
    side = 10_000
    path = tmp_path / "huge.png"
    gen = (
        "from PIL import Image, ImageDraw; import sys\n"
        f"im = Image.new('RGB', ({side}, {side}), (30, 120, 200))\n"
        f"ImageDraw.Draw(im).rectangle([0, 0, {side // 2}, {side // 2}], fill=(250, 10, 10))\n"
        "im.save(sys.argv[1], compress_level=1)\n"
    )
    subprocess.run([sys.executable, "-c", gen, str(path)], check=True, timeout=300)
    env = {**os.environ, images.MAX_MEGAPIXELS_ENV: "100"}  # 100 MP: over the default bound, raised on purpose
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    decoded_kb = side * side * 4 / 1024
    assert (r["peak_kb"] - r["base_kb"]) < 1.25 * decoded_kb, r
    assert r["shape"] == [3, 160, 160]
    np.testing.assert_allclose(r["centre"], [(30 - 127.5) / 127.5, (120 - 127.5) / 127.5, (200 - 127.5) / 127.5], atol=0.02)


# -- the decoded-size bound (issue #20 item 2) ---------------------------------------------------------------


def _grey_png(path, width: int, height: int) -> None:
    """An 8-bit greyscale PNG of zeros written row by row (no decoded copy in this process): a few hundred
    kB on disk for hundreds of megapixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte 0 + one byte per pixel
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


_HUGE_RUN = textwrap.dedent(
    """
    import json, resource, sys
    from mobilenet_edge.cli import main
    bundle, small, huge, folder = sys.argv[1:]
    assert main(["predict", bundle, small]) == 0  # imports, session and one image: the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code_predict = main(["predict", bundle, huge])
    code_eval = main(["eval", bundle, folder])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "peak_kb": peak, "predict": code_predict, "eval": code_eval}))
    """
)


def test_a_23000_px_png_is_refused_from_its_header(tmp_path):
    """The issue's file: 23000 x 23000 (529 MP; 2.1 GB as Pillow's RGB, 529 MB even as greyscale), a small
    PNG within Pillow's guard as this package set it. predict refuses it (exit 1, one line), eval skips it
    with a warning and scores the other image; neither decodes it: the peak RSS of the run (ru_maxrss of a
    fresh interpreter) grows by less than a tenth of the greyscale decode."""
    from _tiny_models import tiny_bundle

    side = 23_000
    folder = tmp_path / "imgs"
    folder.mkdir()
    huge = folder / "huge.png"
    _grey_png(huge, side, side)
    assert huge.stat().st_size < 2_000_000
    small = folder / "small.png"
    Image.new("RGB", (20, 20), (90, 160, 30)).save(small)
    (folder / "labels.csv").write_text("file,imagenet_index\nhuge.png,1\nsmall.png,2\n")
    bundle = tiny_bundle(tmp_path / "b", res=16, classes=1001)
    env = {k: v for k, v in os.environ.items() if k != images.MAX_MEGAPIXELS_ENV}
    proc = subprocess.run([sys.executable, "-c", _HUGE_RUN, str(bundle), str(small), str(huge), str(folder)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["predict"] == 1 and r["eval"] == 0, proc.stderr
    assert (r["peak_kb"] - r["base_kb"]) * 1024 < 0.1 * side * side, r
    lines = proc.stderr.splitlines()
    err = [ln for ln in lines if ln.startswith("mobilenet-edge: error:")]
    assert err == [f"mobilenet-edge: error: cannot decode image {huge}: 23000 x 23000 = 529.0 megapixels, over the "
                   f"50-megapixel limit (set {images.MAX_MEGAPIXELS_ENV} to raise it)"]
    assert any(ln.startswith(f"warning: skipped {huge}: cannot decode: 23000 x 23000") for ln in lines), lines


def test_the_bound_is_read_from_the_environment(tmp_path, monkeypatch):
    png = tmp_path / "a.png"
    Image.new("RGB", (401, 300), (10, 20, 30)).save(png)  # 120300 pixels
    monkeypatch.setenv(images.MAX_MEGAPIXELS_ENV, "0.1")
    with pytest.raises(UsageError, match=r"401 x 300 = 0\.1 megapixels, over the 0\.1-megapixel limit"):
        images.open_image(png)
    monkeypatch.setenv(images.MAX_MEGAPIXELS_ENV, "0.1203")  # exactly 120300 pixels: allowed
    assert images.open_image(png).size == (401, 300)
    monkeypatch.delenv(images.MAX_MEGAPIXELS_ENV)
    assert images.max_pixels() == 50_000_000
    for bad in ("0", "-3", "nan", "lots"):
        monkeypatch.setenv(images.MAX_MEGAPIXELS_ENV, bad)
        with pytest.raises(UsageError, match=images.MAX_MEGAPIXELS_ENV):
            images.max_pixels()
    skipped = []  # a bad setting stops a run once, instead of skipping every image
    with pytest.raises(UsageError, match=images.MAX_MEGAPIXELS_ENV):
        list(images.iter_batches([png, png], _prep(8), on_error=lambda p, e: skipped.append(p)))
    assert skipped == []


def test_a_jpeg_over_the_bound_is_decoded_at_a_reduced_scale(tmp_path, monkeypatch):
    """A JPEG over the bound is not refused: libjpeg decodes it at 1/2 (here), close to the full decode."""
    yy, xx = np.mgrid[0:300, 0:401]
    a = np.stack([xx * 255 // 400, yy * 255 // 299, (xx + yy) * 255 // 699], -1).astype(np.uint8)  # smooth ramps
    jpg = tmp_path / "a.jpg"
    Image.fromarray(a).save(jpg, quality=95)
    prep = _prep(32, resize="tf_bilinear")
    full = images.load(jpg, prep)
    monkeypatch.setenv(images.MAX_MEGAPIXELS_ENV, "0.05")  # 120300 pixels > 50000 >= 201 x 150 = 30150
    assert images.open_image(jpg).size == (201, 150)
    np.testing.assert_allclose(images.load(jpg, prep), full, atol=6)  # a ramp of <= 0.64 grey level / pixel
    monkeypatch.setenv(images.MAX_MEGAPIXELS_ENV, "0.0002")  # even 1/8 (51 x 38 = 1938) is over 200 pixels
    with pytest.raises(UsageError, match="over the 0.0002-megapixel limit"):
        images.open_image(jpg)


def test_tf_crop_resize_follows_tf1_resize_bilinear_semantics():
    """TF1 resize_bilinear(align_corners=False): src = dst * in/out, right neighbour clamped."""
    from mobilenet_edge.core.images import tf_crop_resize

    row = np.array([10, 20, 30, 40], np.uint8)
    arr = np.repeat(np.repeat(row[None, :, None], 4, 0), 3, 2)  # 4x4x3, columns 10..40
    img = Image.fromarray(arr, "RGB")
    # 4 -> 2: samples at 0 and 2 exactly (no anti-aliasing, unlike Pillow)
    np.testing.assert_allclose(tf_crop_resize(img, 1.0, 2)[0, :, 0], [10, 30])
    small = Image.fromarray(np.ascontiguousarray(arr[:2, :2]), "RGB")  # columns 10, 20
    # 2 -> 4: src 0, 0.5, 1, 1.5 -> 10, 15, 20, 20 (clamped at the edge)
    np.testing.assert_allclose(tf_crop_resize(small, 1.0, 4)[0, :, 0], [10, 15, 20, 20])
    # central_crop(0.5) of 4 px: start int((4 - 2) / 2) = 1, size 2 -> columns 20, 30
    np.testing.assert_allclose(tf_crop_resize(img, 0.5, 2)[0, :, 0], [20, 30])
    # rows interpolate the same way (a transposed image gives the transposed result)
    np.testing.assert_allclose(tf_crop_resize(img.transpose(Image.Transpose.TRANSPOSE), 1.0, 2)[:, 0, 0], [10, 30])


def test_missing_image_is_named_without_the_os_error_text(tmp_path):
    """A file that is gone (e.g. deleted between listing and decoding) is one plain line, not '[Errno 2] ...'."""
    gone = tmp_path / "gone.jpg"
    with pytest.raises(UsageError) as e:
        images.load(gone, Preprocessing(res=32))
    assert str(e.value) == f"cannot decode image {gone}: no such file"
