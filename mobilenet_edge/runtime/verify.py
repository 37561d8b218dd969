"""Verify a copied bundle before trusting it: sizes and sha256s against manifest.json, then one
inference per model file in this machine's runtime (no torch; the Pi side of ``mobilenet-edge verify``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.bundle import MANIFEST, file_mismatch
from ..core.errors import MobilenetEdgeError, UsageError
from ..core.manifest import Manifest

#: files that are loaded and run once
MODEL_SUFFIXES = (".onnx", ".tflite")


def verify_bundle(folder: str | Path, *, threads: int = 1) -> dict:
    """Check every file of a bundle against its manifest and run each model once.

    Args:
        folder: bundle folder (holds manifest.json).
        threads: backend threads for the test inference (>= 1).
    Returns:
        JSON-ready ``{"bundle", "ok", "problems": [str], "files": [{"file", "size" (bytes), "size_ok",
        "sha256_ok", "loads", "backend", "inference_ms" (first run, ms), "num_classes", "problem"}],
        "unlisted": [names]}``. ``problems`` are in file order; ``ok`` is True when it is empty.
    Raises:
        UsageError: ``folder`` is not a folder.
        MobilenetEdgeError: no readable manifest.json (not a bundle).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"verify needs a bundle folder, got {folder}")
    manifest = Manifest.read(folder)
    files = manifest.files
    problems: list[str] = []
    rows: list[dict] = []
    if not isinstance(files, dict) or not files:
        problems.append(f"{folder / MANIFEST} lists no files")
        files = {}
    for name, rec in files.items():
        row = check_file(folder, name, rec, manifest, threads=threads)
        rows.append(row)
        if row["problem"]:
            problems.append(row["problem"])
    listed = set(files) | {MANIFEST}
    unlisted = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in listed and not p.name.startswith("."))
    return {"bundle": str(folder), "ok": not problems, "problems": problems, "files": rows, "unlisted": unlisted}


def check_file(folder: Path, name: str, rec: dict, manifest: Manifest, *, threads: int = 1) -> dict:
    """One row of :func:`verify_bundle`: size and sha256 of ``folder/name`` against its ``files`` entry
    ``rec``, then (model files whose bytes match) :func:`check_model`. ``problem`` is the first failure or None."""
    row = {"file": name, "size": None, "size_ok": False, "sha256_ok": False, "loads": None,
           "backend": None, "inference_ms": None, "num_classes": None, "problem": None}
    path = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts:
        row["problem"] = f"{name}: manifest path escapes the bundle"
    elif not path.is_file():
        row["problem"] = f"{name}: listed in manifest.json but missing"
    else:
        size, digest, why = file_mismatch(path, rec)
        row["size"] = size
        row["size_ok"] = size == rec.get("size")
        row["sha256_ok"] = digest == rec.get("sha256")
        if why:
            row["problem"] = f"{name}: {why}"
        elif path.suffix.lower() in MODEL_SUFFIXES:
            check_model(path, manifest, row, threads=threads)
    return row


def check_model(path: Path, manifest: Manifest, row: dict, *, threads: int = 1) -> None:
    """Load ``path`` in the local runtime and run one all-zero image; fills ``row``'s ``loads``, ``backend``,
    ``inference_ms``, ``num_classes`` and (on failure: non-finite scores, a class count other than the
    manifest variant's, or a load error) ``problem``."""
    from .runner import Runner

    name = row["file"]
    want_classes = (manifest.variant or {}).get("num_classes")
    try:
        r = Runner(path, threads=threads)
        row["loads"], row["backend"] = True, f"{r.backend} {r.backend_version}"
        res = r.res or (manifest.preprocessing or {}).get("res") or 224
        shape = (1, 3, res, res) if r.layout == "NCHW" else (1, res, res, 3)
        t = time.perf_counter()
        y = r.run(np.zeros(shape, np.float32))
        row["inference_ms"] = (time.perf_counter() - t) * 1e3
        row["num_classes"] = r.num_classes
        if y.shape != (1, r.num_classes) or not np.all(np.isfinite(y)):
            row["problem"] = f"{name}: inference gave shape {y.shape} / non-finite scores"
        elif want_classes and r.num_classes != want_classes:
            row["problem"] = f"{name}: {r.num_classes} outputs, manifest variant says {want_classes}"
    except MobilenetEdgeError as e:
        row["loads"] = False
        row["problem"] = f"{name}: does not load: {e}"
