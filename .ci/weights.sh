#!/usr/bin/env bash
# CLI smoke check for `weights import` (issue #4), run by .ci/run after the tests, inside .venv.
# Imports the 0.5/160 reference .tflite with verification on the 100 labelled images and checks the
# issue's thresholds from the --json output; then checks that a bad file exits 1 with one line.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${MOBILENET_EDGE_DATA:-../shared/data}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

$PY -m mobilenet_edge.cli weights import "$DATA/reference/mobilenet_v1_0.5_160_quant.tflite" \
    -o "$tmp/w.safetensors" --verify-images "$DATA/imagenet-calib" --json >"$tmp/out.json"
$PY - "$tmp/out.json" <<'PYEOF'
import json, sys
v = json.load(open(sys.argv[1]))["verification"]
print(f"weights import: agreement {v['agreement']:.2f}, top-1 tflite {v['top1_tflite']:.2f}, imported {v['top1_torch']:.2f}")
assert v["n"] == 100 and v["agreement"] >= 0.92 and abs(v["top1_torch"] - v["top1_tflite"]) <= 0.03, v
PYEOF
echo "not a model" >"$tmp/junk.tflite"
set +e
$PY -m mobilenet_edge.cli weights import "$tmp/junk.tflite" -o "$tmp/x.safetensors" 2>"$tmp/err"
code=$?
set -e
[ "$code" = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && [ ! -e "$tmp/x.safetensors" ] || {
    echo "weights.sh: bad-file check failed (exit $code):"; cat "$tmp/err"; exit 1; }
echo "weights.sh: ok"
