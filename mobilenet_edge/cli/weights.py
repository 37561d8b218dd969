"""``mobilenet-edge weights ...``: import Google's TF-slim ``.tflite`` weights into a checkpoint."""

from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core import jsonio
from ..core.bundle import check_can_write
from ..core.errors import UsageError
from .app import app, err, out

weights_app = typer.Typer(
    name="weights",
    no_args_is_help=True,
    help="Import and convert MobileNet V1 weights (TF-slim .tflite -> .safetensors checkpoint).",
)
app.add_typer(weights_app, name="weights")

IMPORT_EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge weights import mobilenet_v1_0.5_160_quant.tflite -o mobilenet_v1_0.50.safetensors\n\n"
    "  mobilenet-edge weights import mobilenet_v1_0.5_160_quant.tflite -o w.safetensors "
    "--verify-images ../shared/data/imagenet-calib --json\n\n"
    "  mobilenet-edge export --alpha 0.5 --res 160 --weights mobilenet_v1_0.50.safetensors"
)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


@weights_app.command("import", epilog=IMPORT_EPILOG)
def import_cmd(
    src: Annotated[Path, typer.Argument(help="TF-slim MobileNet V1 .tflite (quantized uint8 or float).")],
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
