"""``mobilenet-edge verify``: check a copied bundle before trusting it (no torch; the Pi side).

The check itself is :func:`mobilenet_edge.runtime.verify.verify_bundle`; this prints its report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..core import jsonio
from ..core.errors import MobilenetEdgeError
from ..core.tables import add_columns, compact_table
from .app import app, out

EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge verify export/mobilenet_v1_0.50_160\n\n"
    "  mobilenet-edge verify export/mobilenet_v1_0.50_160 --json\n\n"
    "Exit code 0: every file listed in manifest.json has its size and sha256, and every model file "
    "loads in this machine's runtime and runs one inference with finite scores. Exit code 1 names the "
    "first problem."
)


@app.command(epilog=EPILOG)
def verify(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle folder (holds manifest.json).", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts (also on failure).")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1, help="Backend threads for the test inference.")] = 1,
) -> None:
    """Check each file's size and sha256 against manifest.json and that each model loads and runs here."""
    from ..runtime.verify import verify_bundle

    try:
        rep = verify_bundle(bundle_dir, threads=threads)
    except MobilenetEdgeError as e:  # not a folder, no / corrupt manifest.json: --json still answers
        if as_json:
            msg = " ".join(str(e).split())
            out.print_json(jsonio.dumps({"bundle": str(bundle_dir), "ok": False, "error": msg, "problems": [msg],
                                        "files": [], "unlisted": []}))
        raise
    if as_json:
        out.print_json(jsonio.dumps({**rep, "error": None if rep["ok"] else rep["problems"][0]}))
    else:
        t = compact_table(f"verify {rep['bundle']}")
        add_columns(t, ("File", "Size", "sha256", "Loads", "Backend", "1st run ms"),
                    left=("File", "sha256", "Loads", "Backend"), fold=("File",))
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
