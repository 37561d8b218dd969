"""How much top-1 agreement int8 vs fp32 can a given logits SQNR buy on these 100 images? (issue #10)

Agreement on 100 images is decided by the few images whose fp32 top-1 and top-2 logits nearly tie:
any int8 model flips some of them, whatever its recipe. This benchmark makes that measurable.

Model: int8 logits = fp32 logits + white Gaussian noise whose power, per image, is the image's
fp32 logits power divided by ``10^(SQNR/10)`` (the SQNR definition used everywhere in this project:
``10 log10(sum f^2 / sum (f - q)^2)`` over the logits of one image). For each SQNR, ``--draws``
independent noise draws give the distribution of the agreement over the 100 images (mean and the
5th-95th percentiles). The model is then checked against every quantization method measured by
``benchmarks/quant_fidelity.py`` (its JSON): predicted agreement at the method's mean SQNR vs the
agreement it actually had.

Run (about 1 minute):

    PYTHONPATH=$PWD python benchmarks/agreement_vs_sqnr.py export/mobilenet_v1_0.25_128 \\
        export/mobilenet_v1_0.50_160 export/mobilenet_v1_0.75_192 \\
        --calib ../shared/data/imagenet-calib --fidelity benchmarks/quant_fidelity.json \\
        --out benchmarks/agreement_vs_sqnr

writes ``agreement_vs_sqnr.json`` and ``agreement_vs_sqnr.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from quant_fidelity import images_and_labels, run  # noqa: E402

from mobilenet_edge.core import jsonio  # noqa: E402
from mobilenet_edge.core.bundle import check_can_write, read_manifest  # noqa: E402
from mobilenet_edge.core.errors import UsageError  # noqa: E402
from mobilenet_edge.core.images import Preprocessing  # noqa: E402
from mobilenet_edge.core.labels import background_offset  # noqa: E402
from mobilenet_edge.quantize.fidelity import top2_margin  # noqa: E402

SQNR_GRID_DB = (20, 25, 30, 33, 36, 40, 45, 50)
MARGINS = (0.05, 0.1, 0.2)
TIGHTEST = 6


def top2_margins(logits: np.ndarray) -> np.ndarray:
    """``(N,)`` fp32 top-1 minus top-2 logit, for ``(N, classes)`` logits (the fidelity report's measure)."""
    return np.array([top2_margin(row) for row in logits])


def simulate(logits: np.ndarray, sqnr_db: float, draws: int, seed: int,
             labels: np.ndarray | None = None) -> np.ndarray:
    """``(draws,)`` agreement fractions of ``logits`` + white noise at ``sqnr_db`` (per-image power).

    The same ``seed`` gives the same unit-variance noise draws at every SQNR (common random numbers),
    only scaled, so curves over SQNR are smooth and comparable. With ``labels`` (``(N,)`` class indices
    in the logits' numbering), ``(draws, 2)``: agreement, and top-1 of the noisy logits minus top-1 of
    ``logits``.
    """
    rng = np.random.default_rng(seed)
    f = logits.astype(np.float64)
    sigma = np.sqrt((f**2).mean(axis=1, keepdims=True) / 10 ** (sqnr_db / 10))
    ref = f.argmax(axis=1)
    out = []
    for _ in range(draws):
        q = (f + rng.standard_normal(f.shape) * sigma).argmax(axis=1)
        agree = np.mean(q == ref)
        out.append(agree if labels is None else (agree, np.mean(q == labels) - np.mean(ref == labels)))
    return np.array(out)


NEEDED_RANGE_DB = (15.0, 60.0)


def needed_sqnr(logits: np.ndarray, target: float, draws: int, seed: int) -> str:
    """Smallest SQNR on a 0.5 dB grid over :data:`NEEDED_RANGE_DB` whose mean simulated agreement
    reaches ``target``, as text: ``"39.5"``, ``"<= 15"`` or ``"> 60"`` (the grid's ends)."""
    lo, hi = NEEDED_RANGE_DB
    for db in np.arange(lo, hi + 0.25, 0.5):
        if simulate(logits, float(db), draws, seed).mean() >= target:
            return f"<= {lo:g}" if db == lo else f"{db:.1f}"
    return f"> {hi:g}"


def halves(logits: np.ndarray, sqnr_db: float, draws: int, seed: int, floor: float = 0.90) -> dict:
    """Expected agreement on each half of the sorted images (even positions calibrate and odd ones
    evaluate in ``quantize``'s default split) and the chance it falls below ``floor``."""
    out = {}
    for name, idx in (("odd", slice(1, None, 2)), ("even", slice(0, None, 2))):
        a = simulate(logits[idx], sqnr_db, draws, seed)
        out[name] = {"mean": float(a.mean()), "p_below": float(np.mean(a < floor - 1e-9))}
    return {"sqnr_db": sqnr_db, "floor": floor, "draws": draws, **out}


#: the method of quant_fidelity.json whose SQNR the per-half figures use (the default recipe)
DEFAULT_METHOD = "recipe fidelity through `mobilenet_edge.quantize` (the product)"


def analyse(bundle: Path, calib: Path, fid: dict | None, draws: int, seed: int) -> dict:
    prep = Preprocessing.from_dict(read_manifest(bundle)["preprocessing"])
    files, x, y = images_and_labels(calib, prep)
    f = run(bundle / "model.onnx", x)
    y = y + background_offset(f.shape[1])  # 1001-class models: index 0 is "background"
    m = top2_margins(f)
    order = np.argsort(-f, axis=1)[:, :2]
    out = {
        "bundle": bundle.name, "images": len(f),
        "fp32_top1": float(np.mean(f.argmax(axis=1) == y)),
        "logits_rms": float(np.sqrt((f.astype(np.float64) ** 2).mean())),
        "margins_below": {str(t): int((m < t).sum()) for t in MARGINS},
        "tightest": [{"image": files[i], "margin": float(m[i]), "top1_right": bool(order[i, 0] == y[i]),
                      "top2_right": bool(order[i, 1] == y[i])} for i in np.argsort(m)[:TIGHTEST]],
        "simulated": {},
        "needed_sqnr_db": {str(t): needed_sqnr(f, t, draws, seed) for t in (0.95, 0.97, 0.99)},
        "check": [],
    }
    for db in SQNR_GRID_DB:
        a = simulate(f, db, draws, seed, y)
        out["simulated"][str(db)] = {"mean": float(a[:, 0].mean()), "p5": float(np.percentile(a[:, 0], 5)),
                                     "p95": float(np.percentile(a[:, 0], 95)),
                                     "p_top1_not_below_fp32": float(np.mean(a[:, 1] >= -1e-9))}
    entry = next((b for b in (fid or {}).get("bundles", []) if b["bundle"] == bundle.name), None)
    methods = (entry or {}).get("methods", {})
    if DEFAULT_METHOD in methods:
        out["halves"] = halves(f, methods[DEFAULT_METHOD]["sqnr_db_mean"], 10 * draws, seed)
    for name, r in methods.items():
        a = simulate(f, r["sqnr_db_mean"], draws, seed)
        out["check"].append({"method": name, "sqnr_db": r["sqnr_db_mean"], "observed": r["agreement_top1"],
                             "predicted": float(a.mean()), "p5": float(np.percentile(a, 5)),
                             "p95": float(np.percentile(a, 95))})
    return out


def markdown(res: dict) -> str:
    pct = lambda v: f"{100 * v:.0f}%"  # noqa: E731
    lines = [
        "# Top-1 agreement int8 vs fp32 that a logits SQNR can buy on these 100 images (issue #10)",
        "",
        f"Generated by `benchmarks/agreement_vs_sqnr.py` on {res['created']}: fp32 logits of our ONNX models "
        f"(weights imported from Google's reference `.tflite` files) on the {res['bundles'][0]['images']} images "
        f"of `{res['calib']}`, plus white Gaussian noise at a given per-image logits SQNR; "
        f"{res['draws']} noise draws per point (mean, and 5th-95th percentile in brackets).",
        "",
        "## fp32 near-ties",
        "",
        "| model | logits RMS | top-1 - top-2 < " + " | < ".join(str(t) for t in MARGINS) + " |",
        "|---|---|" + "---|" * len(MARGINS),
    ]
    for b in res["bundles"]:
        lines.append(f"| {b['bundle']} | {b['logits_rms']:.2f} | "
                     + " | ".join(f"{n} image{'' if n == 1 else 's'}" for n in (b["margins_below"][str(t)] for t in MARGINS))
                     + " |")
    lines += ["", "## Expected agreement vs logits SQNR", "",
              "The last column: the lowest SQNR on a 0.5 dB grid whose expected agreement reaches 95%, 97%, 99% "
              "(the curves are flat there: read it as +-0.5 dB).", "",
              "| model | " + " | ".join(f"{db} dB" for db in SQNR_GRID_DB) + " | SQNR for 95% / 97% / 99% |",
              "|---|" + "---|" * (len(SQNR_GRID_DB) + 1)]
    for b in res["bundles"]:
        cells = [f"{pct(s['mean'])} ({pct(s['p5'])}-{pct(s['p95'])})" for s in b["simulated"].values()]
        need = " / ".join(f"{b['needed_sqnr_db'][k]} dB" for k in ("0.95", "0.97", "0.99"))
        lines.append(f"| {b['bundle']} | " + " | ".join(cells) + f" | {need} |")
    lines += ["", "## Chance that int8 top-1 is not below fp32 top-1 (same model, same noise)", "",
              "| model | fp32 top-1 | " + " | ".join(f"{db} dB" for db in SQNR_GRID_DB) + " |",
              "|---|---|" + "---|" * len(SQNR_GRID_DB)]
    for b in res["bundles"]:
        lines.append(f"| {b['bundle']} | {pct(b['fp32_top1'])} | "
                     + " | ".join(pct(s["p_top1_not_below_fp32"]) for s in b["simulated"].values()) + " |")
    lines += ["", "Which way a near-tie moves top-1 depends on its labels: when fp32's top-1 is right and its "
              "top-2 wrong, noise can only lose the image; when the top-2 is the right one, noise can only gain it. "
              "The tightest ties (fp32 top-1 - top-2 logit):", "",
              "| model | " + " | ".join(f"tie {k + 1}" for k in range(TIGHTEST)) + " |", "|---|" + "---|" * TIGHTEST]
    kind = lambda t: "can lose" if t["top1_right"] else ("can gain" if t["top2_right"] else "neutral")  # noqa: E731
    for b in res["bundles"]:
        lines.append(f"| {b['bundle']} | " + " | ".join(f"{t['margin']:.3f} {kind(t)}" for t in b["tightest"]) + " |")
    hv = [b for b in res["bundles"] if "halves" in b]
    if hv:
        h0 = hv[0]["halves"]
        lines += ["", "## On one half (50 images: `quantize`'s default evaluation is the odd half)", "",
                  f"At the default recipe's measured SQNR; {h0['draws']} draws.", "",
                  f"| model | SQNR | odd half: expected agreement / chance below {h0['floor']:.0%} | "
                  f"even half: expected / chance below {h0['floor']:.0%} |", "|---|---|---|---|"]
        for b in hv:
            h = b["halves"]
            lines.append(f"| {b['bundle']} | {h['sqnr_db']:.1f} dB | {100 * h['odd']['mean']:.1f}% / "
                         f"{100 * h['odd']['p_below']:.1f}% | {100 * h['even']['mean']:.1f}% / "
                         f"{100 * h['even']['p_below']:.1f}% |")
    checks = [(b["bundle"], c) for b in res["bundles"] for c in b["check"]]
    if checks:
        inside = sum(c["p5"] <= c["observed"] <= c["p95"] for _, c in checks)
        lines += ["", "## The model against the methods measured in quant_fidelity.json", "",
                  f"Observed agreement inside the simulated 5th-95th percentile band for {inside} of {len(checks)} "
                  "(method, model) pairs.", "",
                  "| model | method | mean SQNR | observed | predicted (5-95%) |", "|---|---|---|---|---|"]
        for name, c in checks:
            lines.append(f"| {name} | {c['method']} | {c['sqnr_db']:.1f} dB | {pct(c['observed'])} | "
                         f"{100 * c['predicted']:.1f}% ({pct(c['p5'])}-{pct(c['p95'])}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--calib", type=Path, required=True, help="labelled image folder (labels.csv)")
    ap.add_argument("--fidelity", type=Path, help="quant_fidelity.json to check the model against")
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="output stem (.json and .md are added)")
    ap.add_argument("--force", action="store_true", help="replace existing result files (committed ones included)")
    a = ap.parse_args(argv)
    try:  # never replace results without --force (issue #20)
        for f in (a.out.with_suffix(".json"), a.out.with_suffix(".md")):
            check_can_write(f, "--out", force=a.force)
    except UsageError as e:
        ap.error(str(e))
    fid = json.loads(a.fidelity.read_text()) if a.fidelity else None
    res = {"created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "calib": str(a.calib),
           "draws": a.draws, "seed": a.seed,
           "bundles": [analyse(b, a.calib, fid, a.draws, a.seed) for b in a.bundles]}
    a.out.with_suffix(".json").write_text(jsonio.dumps(res, indent=1) + "\n")
    a.out.with_suffix(".md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
