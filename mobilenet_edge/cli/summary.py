"""``mobilenet-edge summary``: the paper's Table 1 for any alpha/res, with params and MACs."""

from __future__ import annotations

from typing import Annotated

import typer

from ..core import jsonio
from ..core.tables import add_columns, compact_table
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
    wide: Annotated[bool, typer.Option("--wide", help="Add the TF-slim layer names and output shapes (the default "
                                       "table, paper Table 1's columns, fits 80 columns).")] = False,
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
    cols = ["Layer", "Type / Stride", "Filter shape", "Input size", "Output", "Params", "MACs"]
    if not wide:  # paper Table 1's columns (+ counts); the layer name and output shape need --wide
        cols = [c for c in cols if c not in ("Layer", "Output")]
    t = compact_table(f"{v.name}  ({classes} classes)", caption=None if wide else "--wide adds layer names, outputs")
    add_columns(t, cols, left=("Layer", "Type / Stride", "Filter shape", "Input size", "Output"))
    for row in d["layers"]:
        cells = {"Layer": row["name"], "Type / Stride": row["type_stride"], "Filter shape": _shape(row["filter_shape"]),
                 "Input size": _shape(row["input_shape"]), "Output": _shape(row["output_shape"]),
                 "Params": f"{row['params']:,}", "MACs": f"{row['macs']:,}"}
        t.add_row(*[cells[c] for c in cols])
    t.add_section()
    t.add_row(*["Total" if i == 0 else "" for i in range(len(cols) - 2)], f"{d['params']:,}", f"{d['macs']:,}")
    out.print(t)
    s = compact_table("Share per layer type (paper Table 2: conv/FC weights only)")
    add_columns(s, ("Type", "Mult-Adds", "Parameters"), left=("Type",))
    for name, share in d["shares"].items():
        s.add_row(name, f"{share['macs_pct']:.2f}%", f"{share['params_pct']:.2f}%")
    out.print(s)
    out.print(f"{v.name}: {d['params'] / 1e6:.3f} M params, {d['macs'] / 1e6:.1f} M MACs")
