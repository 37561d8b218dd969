#!/usr/bin/env bash
# The Raspberry Pi install story, proven on every change (issues #6, #20):
# the wheel a user builds on the workstation and copies to a Pi (docs/install.md: `pip wheel --no-deps`),
# checked for its package data, then installed from that .whl (not from the source tree) into a second,
# torch-free virtual environment WITHOUT extras, with numpy<2 and tflite-runtime (the fallback .tflite
# backend of older Pi images; tflite-runtime 2.14 needs numpy<2); the runtime tests run there against the
# installed package, and `predict` from the wheel's console script names parrot.jpg a macaw.
#
#   .ci/runtime-env.sh              # venv cached in $MOBILENET_EDGE_RUNTIME_VENV (default below)
#   MOBILENET_EDGE_RUNTIME_VENV=/tmp/rt .ci/runtime-env.sh
#
# Proves: (1) the wheel holds every package file of the checkout, nothing else (no stale build/ leftovers),
# among them Google's three .tflite files + their LICENSE and the ImageNet label data; (2) installing the
# wheel pulls no torch; (3) the tests import the installed package, not the source tree; (4) .tflite files
# run on tflite-runtime (ai-edge-litert absent, asserted by
# tests/test_runtime.py::test_tflite_backend_expected via MOBILENET_EDGE_EXPECT_TFLITE); (5)
# predict/eval/verify work without torch. Tests needing torch or ai-edge-litert skip there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOBILENET_EDGE_RUNTIME_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mobilenet-edge/runtime-venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
start=$(date +%s)

case "$VENV" in "$ROOT"/*) echo "runtime-env: venv must live outside the repo, got $VENV" >&2; exit 2;; esac

if [ ! -x "$VENV/bin/python" ]; then
    echo "runtime-env: creating $VENV ($($PY --version))"
    "$PY" -m venv "$VENV"
fi
# The wheel, as docs/install.md builds it, from a clean copy of the sources (tracked + untracked-not-ignored
# files): an in-tree build would reuse ./build, and setuptools carries files deleted since into the wheel.
# Build isolation on (the default): setuptools>=68 comes from PyPI as on a user's workstation.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/src" "$tmp/dist"
(cd "$ROOT" && git ls-files -co --exclude-standard -z -- pyproject.toml README.md 'LICENSE*' mobilenet_edge \
  | tar --null -T - -cf -) | tar -C "$tmp/src" -xf -
[ -f "$tmp/src/pyproject.toml" ] || { echo "runtime-env: copying the sources of $ROOT failed (not a git checkout?)" >&2; exit 1; }
env -u PYTHONPATH "$PY" -m pip wheel -q --no-deps -w "$tmp/dist" "$tmp/src" \
    || { echo "runtime-env: pip wheel failed" >&2; exit 1; }
WHEEL=$(ls "$tmp"/dist/mobilenet_edge-*.whl)
# Its contents: every package file of the sources, byte for byte, and nothing else; the data by name.
"$PY" - "$WHEEL" "$tmp/src" <<'EOF'
import hashlib, sys, zipfile
from pathlib import Path
wheel, src = Path(sys.argv[1]), Path(sys.argv[2])
z = zipfile.ZipFile(wheel)
got = {n: hashlib.sha256(z.read(n)).hexdigest() for n in z.namelist() if not n.split("/")[0].endswith(".dist-info")}
want = {p.relative_to(src).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in (src / "mobilenet_edge").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
assert got.keys() - want.keys() == set(), f"wheel has files the sources do not: {sorted(got.keys() - want.keys())}"
assert want.keys() - got.keys() == set(), f"wheel lacks: {sorted(want.keys() - got.keys())}"
assert not [n for n in want if got[n] != want[n]], "wheel files differ from the sources"
data = ["mobilenet_edge/build/weights/data/" + f for f in ("LICENSE", "mobilenet_v1_0.25_128_quant.tflite",
        "mobilenet_v1_0.5_160_quant.tflite", "mobilenet_v1_0.75_192_quant.tflite")]
data += ["mobilenet_edge/core/data/imagenet_labels.txt", "mobilenet_edge/core/data/imagenet_synsets.txt"]
assert not [n for n in data if n not in got], f"wheel lacks package data: {[n for n in data if n not in got]}"
ep = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
assert "mobilenet-edge = mobilenet_edge.cli:main" in z.read(ep).decode(), "no mobilenet-edge console script"
print(f"runtime-env: {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB): {len(got)} package files as in the "
      f"sources, the 3 shipped .tflite + LICENSE, the label data")
EOF

# Installed from the .whl without extras (as on a Pi), numpy<2 for tflite-runtime 2.14, pytest to run the
# tests: one resolver run, so numpy<2 also picks compatible versions of the dependencies (onnx ->
# ml_dtypes, whose newest releases need numpy 2). Then a fresh copy of the package itself (no-deps
# reinstall of the same .whl); the dependencies stay cached in the venv.
pip_q() { env -u PYTHONPATH "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
pip_q "$WHEEL" "numpy<2" "tflite-runtime" "pytest>=8"
pip_q --force-reinstall --no-deps "$WHEEL"

cd "$tmp"  # not the repo: `import mobilenet_edge` must find the installed copy
env -u PYTHONPATH "$VENV/bin/python" - <<'EOF'
import importlib.metadata, importlib.util, json, sys
import numpy, mobilenet_edge
bad = [m for m in ("torch", "ai_edge_litert") if importlib.util.find_spec(m) is not None]
assert not bad, f"runtime env must not have {bad}"
assert "site-packages" in mobilenet_edge.__file__, mobilenet_edge.__file__
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
url = json.loads(importlib.metadata.distribution("mobilenet-edge").read_text("direct_url.json"))["url"]
assert url.endswith(".whl"), f"mobilenet-edge was installed from {url}, not from the wheel"
import tflite_runtime, onnxruntime
print(f"runtime-env: mobilenet_edge from {mobilenet_edge.__file__}; numpy {numpy.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, tflite-runtime {tflite_runtime.__version__}; no torch, no ai-edge-litert")
EOF

# The tests live in the repo; the package comes from site-packages (pytest's rootdir insertion adds
# tests/ to sys.path, not the repo root; PYTHONPATH is cleared).
env -u PYTHONPATH MOBILENET_EDGE_EXPECT_TFLITE=tflite-runtime \
    "$VENV/bin/python" -c 'import sys, pytest; sys.exit(pytest.main(sys.argv[1:]))' \
    -q -p no:cacheprovider --rootdir "$ROOT" -c "$ROOT/pyproject.toml" \
    "$ROOT/tests/test_runtime.py" "$ROOT/tests/test_images.py" "$ROOT/tests/test_predict.py" \
    "$ROOT/tests/test_api_runtime.py"
# The Pi story end to end (issues #17, #18, #20): a bundle exported on the workstation from the weights shipped
# with the package (no --weights, no network), then predicted in this torch-free venv by the wheel's console
# script and through the Python API. Expected top-1 from the data
# README: Google's 0.5/160 file says "macaw" for parrot.jpg.
HOST_BIN="${MOBILENET_EDGE_HOST_BIN:-$ROOT/.venv/bin}"
DATA="${MOBILENET_EDGE_DATA:-$ROOT/../shared/data}"
if [ -x "$HOST_BIN/mobilenet-edge" ] && [ -f "$DATA/images/parrot.jpg" ]; then
    out=$(mktemp -d)
    "$HOST_BIN/mobilenet-edge" export --alpha 0.5 --res 160 --out "$out" >/dev/null 2>&1 \
        || { echo "runtime-env: export with the shipped weights failed" >&2; exit 1; }
    top=$(env -u PYTHONPATH "$VENV/bin/mobilenet-edge" predict "$out/mobilenet_v1_0.50_160" "$DATA/images/parrot.jpg" --json --top-k 1)
    echo "$top" | "$VENV/bin/python" -c 'import json, sys; r = json.load(sys.stdin); l = r[0]["top_k"][0]["label"]; print(f"runtime-env: torch-free predict on the shipped 0.5/160 weights: {l}"); sys.exit(l != "macaw")' \
        || { echo "runtime-env: expected macaw for parrot.jpg" >&2; exit 1; }
    # the same through the Python API (issue #18): import mobilenet_edge as me; me.load(...).predict(...)
    env -u PYTHONPATH "$VENV/bin/python" - "$out/mobilenet_v1_0.50_160" "$DATA/images/parrot.jpg" <<'PY' \
        || { echo "runtime-env: the Python API did not say macaw for parrot.jpg" >&2; exit 1; }
import sys
import mobilenet_edge as me
top = me.load(sys.argv[1]).predict(sys.argv[2], top_k=1)
assert "torch" not in sys.modules
print(f"runtime-env: torch-free me.load(...).predict(...): {top[0].label}")
sys.exit(top[0].label != "macaw")
PY
    rm -rf "$out"
elif [ "${CI:-}" = "true" ]; then
    echo "runtime-env: no host venv or no shared data for the shipped-weights check" >&2; exit 1
fi
echo "runtime-env: OK in $(( $(date +%s) - start )) s"
