#!/usr/bin/env bash
# CLI smoke check for `mobilenet-edge quantize` (issue #5), run by .ci/run after the tests:
# a random-weight bundle -> synthetic calibration -> JSON record; then the bad-input exit code.
# Usage: .ci/quantize.sh [PYTHON]   (default .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

$PY -m mobilenet_edge.cli export --alpha 0.25 --res 64 --classes 1001 --padding tf_same --out "$tmp" >/dev/null
b="$tmp/mobilenet_v1_0.25_64"
$PY -m mobilenet_edge.cli quantize "$b" --json > "$tmp/q.json"
$PY - "$tmp/q.json" "$b" <<'PY'
import json, sys, pathlib
rec = json.load(open(sys.argv[1]))
b = pathlib.Path(sys.argv[2])
m = json.loads((b / "manifest.json").read_text())
assert rec["calibration_source"]["kind"] == "synthetic" and rec["accuracy_meaningful"] is False
assert m["files"]["model.int8.onnx"]["precision"] == "int8"
assert m["quantization"]["per_channel"] is True and "isa" in m["quantization"]
assert not rec["activation_ranges"]["outside_one_step"]
print(f"quantize ok: int8 {rec['size']['ratio']:.1%} of fp32, agreement {rec['fidelity']['agreement_top1']:.0%} (random weights)")
PY
mkdir "$tmp/empty"
set +e
$PY -m mobilenet_edge.cli quantize "$b" --calib "$tmp/empty" --force 2>/dev/null
code=$?
set -e
[ "$code" = 2 ] || { echo "quantize: empty --calib should exit 2, got $code" >&2; exit 1; }
echo "quantize: bad-input exit code ok"
