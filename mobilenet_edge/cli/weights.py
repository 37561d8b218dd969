"""``mobilenet-edge weights ...``: import Google's TF-slim ``.tflite`` weights into a checkpoint."""

from __future__ import annotations

import contextlib
import shlex
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core import jsonio
from ..core.bundle import check_can_write
from ..core.errors import MobilenetEdgeError, UsageError
from .app import Group, app, err, out

weights_app = typer.Typer(
    name="weights",
    cls=Group,
    no_args_is_help=True,
    help="Google's published MobileNet V1 weights by name (list, download) and import into a .safetensors checkpoint.",
    epilog=("Examples:\n\n"
            "  mobilenet-edge weights list\n\n"
            "  mobilenet-edge weights download google-quant/1.0/224   # for a machine offline\n\n"
            "  mobilenet-edge weights import W.tflite -o w.safetensors"),
)
app.add_typer(weights_app, name="weights")

IMPORT_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge weights import google-quant --alpha 0.5 --res 160 -o mobilenet_v1_0.50.safetensors\n\n"
    "  mobilenet-edge weights import mobilenet_v1_0.5_160_quant.tflite -o mobilenet_v1_0.50.safetensors\n\n"
    "  mobilenet-edge weights import mobilenet_v1_0.5_160_quant.tflite -o w.safetensors "
    "--verify-images ../shared/data/imagenet-calib --json\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --weights mobilenet_v1_0.50.safetensors"
)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


@weights_app.command("import", epilog=IMPORT_EPILOG)
def import_cmd(
    src: Annotated[str, typer.Argument(help="TF-slim MobileNet V1 .tflite (uint8 or float), or a name: google-quant, "
                                      "google-float (alpha/res from --alpha/--res), see `weights list`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Destination .safetensors checkpoint.")],
    alpha: Annotated[
        Optional[float], typer.Option(help="Expected width multiplier; error if the file has another.")
    ] = None,
    verify_images: Annotated[
        Optional[Path],
        typer.Option(
            "--verify-images",
            help="Folder/file of images: compare the .tflite (LiteRT) with the imported model (top-1 "
            "agreement; accuracy when the folder has labels.csv).",
        ),
    ] = None,
    res: Annotated[
        Optional[int], typer.Option(min=32, help="Resolution for verification (default: the .tflite's own).")
    ] = None,
    min_agreement: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Fail (exit 1, nothing written) if top-1 agreement is below this fraction."
        ),
    ] = 0.8,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Import a TF-slim MobileNet V1 .tflite into a .safetensors checkpoint for export.

    Dequantizes the uint8 weights and int32 biases, infers alpha and the class count (1001, index 0
    = background), sets relu6 / tf_same padding / x/127.5-1 preprocessing with crop 0.875 and the
    ImageNet labels, and stores them in the checkpoint's metadata, so `export --weights FILE` needs
    nothing else. With --verify-images, runs the .tflite in LiteRT and the imported model in PyTorch
    on the same preprocessed images and reports top-1 agreement and accuracy.
    """
    from ..build import weights as W

    t0 = time.perf_counter()
    src = _source_file(src, alpha=alpha, res=res)
    src = _check_paths(src, output, force=force, verify_images=verify_images)
    loaded = W.load_weights(src, alpha=alpha)
    verification = None
    if verify_images is not None:
        verification = _verify(src, loaded, verify_images, res=res, min_agreement=min_agreement)
    W.save_checkpoint(loaded, output)
    seconds = time.perf_counter() - t0
    size = output.stat().st_size
    result = {
        "src": str(src),
        "output": str(output),
        "size": size,
        "source": loaded.source_info(),
        "config": loaded.config,
        "preprocessing": loaded.preprocessing,
        "labels": len(loaded.labels) if loaded.labels else None,
        "verification": verification,
        "seconds": round(seconds, 3),
    }
    if as_json:
        out.print_json(jsonio.dumps(result))
        return
    _print_result(src, output, loaded.config, verification, size=size, seconds=seconds)


def _source_file(src: str, *, alpha: float | None, res: int | None) -> Path:
    """A path as given, or a registry name resolved to its shipped / cached / downloaded file.

    Raises:
        UsageError: unknown name (close ones listed), alpha/res not in the grid.
        WeightsError: the download failed.
    """
    from ..build.weights.resolve import resolve_weights

    if src == "random":
        raise UsageError("weights import needs a weights file or name, not random")
    with download_progress() as progress:
        resolved = resolve_weights(src, alpha=alpha, res=224 if res is None else res, progress=progress, warn=_note)
    if resolved.entry is not None:
        err.print(f"{resolved.entry.name}: {resolved.path} ({resolved.origin})", markup=False, soft_wrap=True)
    return resolved.path


def _note(msg: str) -> None:
    err.print(msg, markup=False, soft_wrap=True)


@contextlib.contextmanager
def download_progress():
    """A transient byte bar on stderr, started at the first byte (nothing is drawn when nothing is
    downloaded); yields the ``progress(done, total)`` callback."""
    from ..core.progress import progress_bar

    state: dict = {}

    def progress(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = progress_bar(err, description="downloading", transient=True)
            state["bar"].start()
            state["task"] = state["bar"].add_task("download", total=total or None)
        state["bar"].update(state["task"], completed=done, total=total or None)

    try:
        yield progress
    finally:
        if "bar" in state:
            state["bar"].stop()


def _check_paths(src: Path, output: Path, *, force: bool, verify_images: Path | None) -> Path:
    """Every check of the command line before the import: the source path, the output name and folder.

    Raises:
        UsageError: missing/unsupported source, output not .safetensors, existing output without
            --force, unwritable folder, output == source, --verify-images with a non-.tflite source.
    """
    from ..build.weights import check_weights_path

    src = check_weights_path(src)
    if output.suffix.lower() != ".safetensors":
        raise UsageError(f"--output must end in .safetensors, got {output.name}")
    if output.exists() and not force:
        raise UsageError(f"{output} exists; use --force to replace it")
    check_can_write(output, "--output")  # before the import and the verification, not after
    if output.resolve() == src.resolve():
        raise UsageError("--output must differ from the source file")
    if verify_images is not None and src.suffix.lower() != ".tflite":
        raise UsageError("--verify-images needs a .tflite source (it compares LiteRT with the imported model)")
    return src


def _verify(src: Path, loaded, verify_images: Path, *, res: int | None, min_agreement: float) -> dict:
    """:func:`~mobilenet_edge.build.weights.verify_import` on the images, with a transient "verifying" bar.

    Raises:
        WeightsError: top-1 agreement below ``min_agreement`` (nothing is written).
    """
    from ..build.weights import verify_import
    from ..core.errors import WeightsError
    from ..core.images import expand_paths
    from ..core.progress import progress_bar

    paths = expand_paths([verify_images])
    with progress_bar(err, description="verifying", transient=True) as bar:
        task = bar.add_task("verify", total=3 * len(paths))
        verification = verify_import(
            src, loaded, paths, res=res, progress=lambda done, total: bar.update(task, completed=done)
        )
    verification["images"] = str(verify_images)
    verification["min_agreement"] = min_agreement
    if verification["agreement"] < min_agreement:
        raise WeightsError(
            f"top-1 agreement {_pct(verification['agreement'])} between {src.name} and the imported model "
            f"on {verification['n']} images is below --min-agreement {_pct(min_agreement)}; nothing written"
        )
    return verification


def _print_result(src: Path, output: Path, cfg: dict, verification: dict | None, *, size: int, seconds: float) -> None:
    """The human-readable report: what was imported, the verification figures, where it went, what next."""
    from ..build.weights import default_res

    out.print(
        f"imported {src.name}: alpha {cfg['alpha']:g}, {cfg['num_classes']} classes, "
        f"{cfg['activation']}, padding {cfg['padding']}"
    )
    if verification:
        v = verification
        line = (
            f"verification on {v['n']} images at res {v['res']}: top-1 agreement {_pct(v['agreement'])} "
            f"({v['agree']}/{v['n']}; {v['agree_within_ties']}/{v['n']} counting ties in the uint8 output)"
        )
        if v["n_labelled"]:
            line += (
                f"; top-1 accuracy .tflite {_pct(v['top1_tflite'])}, imported {_pct(v['top1_torch'])} "
                f"({v['n_labelled']} labelled)"
            )
        out.print(line)
    else:
        err.print("not verified: add --verify-images DIR to compare with the .tflite in LiteRT")
    out.print(f"saved {output} ({size / 1e6:.1f} MB) in {seconds:.1f} s", markup=False, soft_wrap=True)
    res_hint = verification["res"] if verification else (default_res(src) if src.suffix.lower() == ".tflite" else 224)
    out.print(f"next: mobilenet-edge export --alpha {cfg['alpha']:g} --res {res_hint} --weights "
              f"{shlex.quote(str(output))}", markup=False, soft_wrap=True)


LIST_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge weights list\n\n"
    "  mobilenet-edge weights list --source google-float --json\n\n"
    "Sources: google-quant (TF-slim quantization-aware trained .tflite), google-float (TF-slim float .tflite), "
    "keras (Keras applications .h5). Top-1 is the published figure (TF-slim table; for keras the paper's). "
    "Cache: $MOBILENET_EDGE_CACHE/weights, else the user cache dir (~/.cache/mobilenet-edge/weights on Linux)."
)


@weights_app.command("list", epilog=LIST_EPILOG)
def list_cmd(
    source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the entries as JSON on stdout.")] = False,
) -> None:
    """List Google's published MobileNet V1 weights: source, alpha, res, published top-1, size, cached or shipped."""
    from ..build.weights import download as D
    from ..build.weights.registry import REGISTRY, check_source
    from ..core.tables import add_columns, compact_table

    if source is not None:
        check_source(source)
    rows = []
    for e in REGISTRY:
        if source is not None and e.source != source:
            continue
        shipped, hit = D.shipped_path(e), D.cached(e)
        rows.append({**e.to_dict(), "shipped": shipped is not None, "cached": hit is not None,
                     "local_path": str(shipped or hit) if (shipped or hit) else None})
    if as_json:
        out.print_json(jsonio.dumps({"cache": str(D.cache_dir()), "entries": rows}))
        return
    t = compact_table(f"MobileNet V1 weights (cache: {D.cache_dir()})")
    add_columns(t, ("name", "source", "alpha", "res", "top-1", "size", "cached"), left=("name", "source", "cached"))
    for r in rows:
        size = r["size"] or r["download_size"]
        t.add_row(r["name"], r["source"], f"{r['alpha']:g}", str(r["res"]),
                  "?" if r["top1"] is None else f"{r['top1']:.1f}%", "?" if size is None else f"{size / 1e6:.1f} MB",
                  "shipped" if r["shipped"] else "yes" if r["cached"] else "no")
    out.print(t)


DOWNLOAD_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge weights download google-quant/1.0/224\n\n"
    "  mobilenet-edge weights download google-quant --alpha 0.5        # the four resolutions of alpha 0.5\n\n"
    "  mobilenet-edge weights download --all                           # all 48 files, for a machine without network\n\n"
    "  MOBILENET_EDGE_WEIGHTS_URL=http://mirror.local/models mobilenet-edge weights download keras/0.25/128\n\n"
    "Then copy the cache folder (`weights list` prints it) to the machine without network."
)


@weights_app.command("download", epilog=DOWNLOAD_EPILOG)
def download_cmd(
    names: Annotated[Optional[list[str]], typer.Argument(help="SOURCE/ALPHA/RES, or SOURCE (filtered by --alpha/--res).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every entry of `weights list`.")] = False,
    alpha: Annotated[Optional[float], typer.Option(help="With a bare SOURCE: only this alpha.")] = None,
    res: Annotated[Optional[int], typer.Option(help="With a bare SOURCE: only this resolution.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what is where as JSON on stdout.")] = False,
) -> None:
    """Download weights into the cache (hash-checked; shipped and cached files are not downloaded again)."""
    from ..build.weights import download as D
    from ..build.weights.registry import REGISTRY

    if all_ == bool(names):
        raise UsageError("give NAME... or --all (not both)")
    entries = list(REGISTRY) if all_ else _entries(names, alpha, res)
    done, failures = [], []
    for e in entries:
        try:
            p, origin = D.shipped_path(e), "shipped"
            if p is None:
                p, origin = D.cached(e), "cache"  # a stale file is reported by fetch
            if p is None:
                with download_progress() as progress:
                    p, origin = D.fetch(e, progress=progress, warn=_note), "download"
        except MobilenetEdgeError as ex:
            failures.append(str(ex))
            if len(entries) > 1:  # one entry: its error is the command's one line
                err.print(f"{e.name}: {ex}", markup=False, soft_wrap=True)
            continue
        done.append({"name": e.name, "path": str(p), "origin": origin})
        if not as_json:
            out.print(f"{e.name}: {p} ({'already ' + origin if origin != 'download' else 'downloaded'})",
                      markup=False, soft_wrap=True)
    if as_json:
        out.print_json(jsonio.dumps({"cache": str(D.cache_dir()), "files": done, "failures": failures}))
    if failures:
        raise MobilenetEdgeError(f"{len(failures)} of {len(entries)} downloads failed" if len(failures) > 1
                                 else failures[0])


def _entries(names: list[str], alpha: float | None, res: int | None) -> list:
    """Registry entries for NAME arguments (SOURCE/ALPHA/RES, or SOURCE filtered by --alpha/--res).

    Raises:
        UsageError: unknown name (close ones listed), alpha/res not in the grid.
    """
    from ..build.weights.registry import REGISTRY, lookup, parse_name

    picked = []
    for n in names:
        source, a, r = parse_name(n)
        a = a if a is not None else alpha
        r = r if r is not None else res
        if a is not None and r is not None:
            picked.append(lookup(source, a, r))
            continue
        if a is not None or r is not None:  # one of them: check it exists in the grid
            lookup(source, a if a is not None else 1.0, r if r is not None else 224)
        picked += [e for e in REGISTRY if e.source == source and (a is None or abs(e.alpha - a) < 1e-9)
                   and (r is None or e.res == r)]
    return list(dict.fromkeys(picked))
