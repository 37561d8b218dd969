"""``mobilenet-edge verify``: check a copied bundle before trusting it (no torch; the Pi side)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..core import jsonio as _json
from ..core.errors import MobilenetEdgeError, UsageError
from .app import app, out

EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge verify export/mobilenet_v1_0.50_160\n\n"
    "  mobilenet-edge verify export/mobilenet_v1_0.50_160 --json\n\n"
    "Exit code 0: every file listed in manifest.json has its size and sha256, and every model file "
    "loads in this machine's runtime and runs one inference with finite scores. Exit code 1 names the "
    "first problem."
)

MODEL_SUFFIXES = (".onnx", ".tflite")


def verify_bundle(folder: str | Path, *, threads: int = 1) -> dict:
    """Check every file of a bundle against its manifest and run each model once.

    Returns:
        ``{"bundle", "ok", "problems": [str], "files": [{"file", "size", "size_ok", "sha256_ok",
        "loads", "backend", "inference_ms", "num_classes", "problem"}], "unlisted": [names]}``.
        ``problems`` are in file order; ``ok`` is True when it is empty.
    Raises:
        UsageError: ``folder`` is not a folder.
        MobilenetEdgeError: no readable manifest.json (not a bundle).
    """
    import time

    import numpy as np

    from ..core import bundle
    from ..runtime.runner import Runner

    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"verify needs a bundle folder, got {folder}")
    manifest = bundle.read_manifest(folder)
    files = manifest.get("files")
    problems: list[str] = []
    rows: list[dict] = []
    if not isinstance(files, dict) or not files:
        problems.append(f"{folder / bundle.MANIFEST} lists no files")
        files = {}
    want_classes = (manifest.get("variant") or {}).get("num_classes")
    for name, rec in files.items():
        row = {"file": name, "size": None, "size_ok": False, "sha256_ok": False, "loads": None,
               "backend": None, "inference_ms": None, "num_classes": None, "problem": None}
        rows.append(row)
        path = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            row["problem"] = f"{name}: manifest path escapes the bundle"
        elif not path.is_file():
            row["problem"] = f"{name}: listed in manifest.json but missing"
        else:
            size = path.stat().st_size
            row["size"] = size
            row["size_ok"] = size == rec.get("size")
            digest = bundle.sha256_file(path)
            row["sha256_ok"] = digest == rec.get("sha256")
            if not row["size_ok"]:
                row["problem"] = f"{name}: size {size} bytes, manifest says {rec.get('size')}"
            elif not row["sha256_ok"]:
                row["problem"] = f"{name}: sha256 {digest[:12]}... differs from the manifest's {str(rec.get('sha256'))[:12]}..."
            elif path.suffix.lower() in MODEL_SUFFIXES:
                try:
                    r = Runner(path, threads=threads)
                    row["loads"], row["backend"] = True, f"{r.backend} {r.backend_version}"
                    res = r.res or (manifest.get("preprocessing") or {}).get("res") or 224
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
        if row["problem"]:
            problems.append(row["problem"])
    listed = set(files) | {bundle.MANIFEST}
    unlisted = sorted(p.name for p in folder.iterdir() if p.is_file() and p.name not in listed and not p.name.startswith("."))
    return {"bundle": str(folder), "ok": not problems, "problems": problems, "files": rows, "unlisted": unlisted}


@app.command(epilog=EPILOG)
def verify(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle folder (holds manifest.json).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (also on failure).")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Backend threads for the test inference.")] = 1,
) -> None:
    """Check each file's size and sha256 against manifest.json and that each model loads and runs here."""
    try:
        rep = verify_bundle(bundle_dir, threads=threads)
    except MobilenetEdgeError as e:  # not a folder, no / corrupt manifest.json: --json still answers
        if as_json:
            msg = " ".join(str(e).split())
            out.print_json(_json.dumps({"bundle": str(bundle_dir), "ok": False, "error": msg, "problems": [msg],
                                        "files": [], "unlisted": []}))
        raise
    if as_json:
        out.print_json(_json.dumps({**rep, "error": None if rep["ok"] else rep["problems"][0]}))
    else:
        t = Table(title=f"verify {rep['bundle']}", title_justify="left")
        for col in ("File", "Size", "sha256", "Loads", "Backend", "1st run ms"):
            t.add_column(col, justify="right" if col in ("Size", "1st run ms") else "left")
        for r in rep["files"]:
            t.add_row(
                r["file"], "-" if r["size"] is None else f"{r['size']:,}",
                "ok" if r["sha256_ok"] else "FAIL", {None: "-", True: "ok", False: "FAIL"}[r["loads"]],
                r["backend"] or "-", "-" if r["inference_ms"] is None else f"{r['inference_ms']:.1f}",
            )
        out.print(t)
        if rep["unlisted"]:
            out.print(f"not in the manifest (not checked): {', '.join(rep['unlisted'])}")
        if rep["ok"]:
            out.print(f"{rep['bundle']}: OK ({len(rep['files'])} files)")
    if not rep["ok"]:
        raise MobilenetEdgeError(f"{rep['bundle']}: {rep['problems'][0]}")
