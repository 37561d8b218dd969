#!/usr/bin/env bash
# The Keras oracle for the .h5 importer (issue #17): Keras 3 with the JAX backend (no TensorFlow) in a venv
# of its own (~700 MB with jaxlib, so not in the main one), cached outside the repo; then tests/test_keras.py
# runs in the main venv with MOBILENET_EDGE_KERAS_PYTHON pointing at it (Keras builds, randomises and saves
# a MobileNet and its logits; our importer must match them to 1e-4).
#
#   .ci/keras.sh                                  # venv in $MOBILENET_EDGE_KERAS_VENV (default below)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MOBILENET_EDGE_KERAS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mobilenet-edge/keras-venv}"
PY="${PYTHON:-python3}"
HOST_BIN="${MOBILENET_EDGE_HOST_BIN:-$ROOT/.venv/bin}"
start=$(date +%s)
case "$VENV" in "$ROOT"/*) echo "keras: venv must live outside the repo, got $VENV" >&2; exit 2;; esac
if [ ! -x "$VENV/bin/python" ]; then
    echo "keras: creating $VENV"
    "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q "keras>=3.5" jax h5py numpy 2> >(grep -v "^WARNING: Location" >&2)
"$VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("tensorflow") is not None)' \
    || { echo "keras: the oracle venv must not have tensorflow" >&2; exit 1; }
cd "$ROOT"
MOBILENET_EDGE_KERAS_PYTHON="$VENV/bin/python" MOBILENET_EDGE_KERAS_REQUIRED=1 \
    "$HOST_BIN/python" -m pytest -q -p no:cacheprovider tests/test_keras.py
echo "keras: OK in $(( $(date +%s) - start )) s"
