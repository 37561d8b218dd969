"""``mobilenet-edge summary``: the paper's Table 1 for any alpha/res, with params and MACs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from ..core import jsonio
from ..core.variants import Variant
from .app import app, out

EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge summary --alpha 0.5 --res 160\n\n"
    "  mobilenet-edge summary --alpha 1.0 --res 224 --classes 1001 --json"
)


def _shape(s) -> str:
    return "x".join(str(v) for v in s)


@app.command(epilog=EPILOG)
def summary(
    alpha: Annotated[float, typer.Option(help="Width multiplier (> 0); channels max(int(c*alpha), 8).")] = 1.0,
    res: Annotated[int, typer.Option(help="Input resolution in pixels (>= 32).")] = 224,
    classes: Annotated[int, typer.Option("--classes", help="Output classes (1001 for Google's models).")] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Per-layer table (paper Table 1) with params and MACs, totals, and the per-type shares (Table 2).

    MACs are conv + FC multiply-adds (the paper's Mult-Adds); params include BN gamma/beta and the
    FC bias. Computed analytically (no torch needed).
    """
    v = Variant(alpha, res, classes)
    d = v.to_dict()
    if as_json:
        out.print_json(jsonio.dumps(d))
        return
    t = Table(title=f"{v.name}  ({classes} classes)", title_justify="left")
    for col in ("Layer", "Type / Stride", "Filter shape", "Input size", "Output", "Params", "MACs"):
        t.add_column(col, justify="right" if col in ("Params", "MACs") else "left")
    for row in d["layers"]:
        t.add_row(
            row["name"], row["type_stride"], _shape(row["filter_shape"]), _shape(row["input_shape"]),
            _shape(row["output_shape"]), f"{row['params']:,}", f"{row['macs']:,}",
        )
    t.add_section()
    t.add_row("Total", "", "", "", "", f"{d['params']:,}", f"{d['macs']:,}")
    out.print(t)
    s = Table(title="Share per layer type (paper Table 2: conv/FC weights only)", title_justify="left")
    s.add_column("Type")
    s.add_column("Mult-Adds", justify="right")
    s.add_column("Parameters", justify="right")
    for name, share in d["shares"].items():
        s.add_row(name, f"{share['macs_pct']:.2f}%", f"{share['params_pct']:.2f}%")
    out.print(s)
    out.print(f"{v.name}: {d['params'] / 1e6:.3f} M params, {d['macs'] / 1e6:.1f} M MACs")
