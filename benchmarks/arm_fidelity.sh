#!/usr/bin/env bash
# Does int8 fidelity carry over to the Pi's kernels? Runs fp32 and int8 (recipe fidelity and plain) ONNX
# models of the three reference variants on onnxruntime for aarch64 under qemu-user (Cortex-A72 = Pi 4,
# Cortex-A76 = Pi 5) and on this x86 host, on the same preprocessed inputs (the 100 images of
# imagenet-calib), and compares: fp32 logits vs x86, int8 top-1 vs x86 int8, and each platform's int8
# vs its own fp32 (agreement and logits SQNR on the odd half, the half `quantize` evaluates by default).
#
# Needs the cached arm64 root of .ci/arm-check.sh (run that once) and root. Outputs only, no timing
# (emulated). About 11 minutes here (qemu runs the aarch64 side ~30x slower).
#
# Usage: sudo bash benchmarks/arm_fidelity.sh [HOST_PYTHON]   (HOST_PYTHON: a venv python with the export
# extra; default .venv/bin/python). Writes benchmarks/arm_fidelity.md.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "arm_fidelity: needs root (chroot, mount): run with sudo" >&2; exit 1; }
# Own mount namespace: the proc/dev mounts below vanish with this process even if it is killed.
if [ -z "${ARM_FIDELITY_NS:-}" ] && command -v unshare >/dev/null; then
  ARM_FIDELITY_NS=1 exec unshare -m --propagation private bash "$0" "$@"
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-$REPO/.venv/bin/python}
CACHE=${MOBILENET_EDGE_ARM_CACHE:-/var/cache/mobilenet-edge/arm64-bookworm}
ROOT=$CACHE/root
DATA=${MOBILENET_EDGE_DATA:-$REPO/../shared/data}
[ -x "$ROOT/opt/venv-litert/bin/python" ] || { echo "arm_fidelity: no arm64 root at $ROOT: run .ci/arm-check.sh first" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
export PYTHONPATH=$REPO:$REPO/benchmarks PYTHONDONTWRITEBYTECODE=1
LOG=$(mktemp /tmp/arm_fidelity.XXXXXX.log)
step() { "$@" >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; echo "arm_fidelity: FAILED: $* (log: $LOG)" >&2; exit 1; }; }

# 1. host: bundles with imported weights, int8 by both recipes, preprocessed inputs
for v in "0.25 128 0.25_128 0.25_128" "0.5 160 0.5_160 0.50_160" "0.75 192 0.75_192 0.75_192"; do
  set -- $v
  step "$PY" -m mobilenet_edge.cli export --alpha "$1" --res "$2" --weights "$DATA/reference/mobilenet_v1_$3_quant.tflite" --out "$W/b"
  cp -r "$W/b/mobilenet_v1_$4" "$W/p$4"; mv "$W/b/mobilenet_v1_$4" "$W/b$4"
  step "$PY" -m mobilenet_edge.cli quantize "$W/b$4" --calib "$DATA/imagenet-calib"
  step "$PY" -m mobilenet_edge.cli quantize "$W/p$4" --calib "$DATA/imagenet-calib" --recipe plain
done
"$PY" - "$W" "$DATA/imagenet-calib" <<'PYEOF'
import sys, numpy as np
from pathlib import Path
from quant_fidelity import images_and_labels
from mobilenet_edge.core.bundle import read_manifest
from mobilenet_edge.core.images import Preprocessing
w = Path(sys.argv[1])
for k in ["0.25_128", "0.50_160", "0.75_192"]:
    prep = Preprocessing.from_dict(read_manifest(w / f"b{k}")["preprocessing"])
    _, x, _ = images_and_labels(Path(sys.argv[2]), prep)
    np.save(w / f"x{k}.npy", x)
PYEOF
cat > "$W/run.py" <<'PYEOF'
import sys, numpy as np
from mobilenet_edge.core.sessions import ort_session
w, tag = sys.argv[1], sys.argv[2]
for k in ["0.25_128", "0.50_160", "0.75_192"]:
    x = np.load(f"{w}/x{k}.npy")
    for m, p in [("fp32", f"b{k}/model.onnx"), ("fidelity", f"b{k}/model.int8.onnx"), ("plain", f"p{k}/model.int8.onnx")]:
        s = ort_session(f"{w}/{p}", threads=1)
        np.save(f"{w}/out_{tag}_{k}_{m}.npy", np.concatenate([s.run(None, {"input": x[i:i + 10]})[0] for i in range(0, len(x), 10)]))
PYEOF
step "$PY" "$W/run.py" "$W" x86

# 2. aarch64 under qemu-user, in the cached root (proc + a private /dev; no /sys: ORT crashes on it under qemu)
exec 9>"$CACHE/.lock"; flock -w 600 9
MNT=()
cleanup() { for m in "${MNT[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done; rm -rf "$ROOT/opt/fid" "$W"; }
trap cleanup EXIT
for d in proc dev; do  # never mount over a symlink (it could lead out of the root) or an existing mount
  [ -d "$ROOT/$d" ] && [ ! -L "$ROOT/$d" ] || { echo "arm_fidelity: $ROOT/$d is not a plain folder" >&2; exit 1; }
  ! mountpoint -q "$ROOT/$d" || { echo "arm_fidelity: $ROOT/$d is already mounted (another run?)" >&2; exit 1; }
done
mount -t proc proc "$ROOT/proc"; MNT+=("$ROOT/proc")
mount -t tmpfs -o mode=755,size=1m devtmp "$ROOT/dev"; MNT+=("$ROOT/dev")
for n in null:1:3 zero:1:5 urandom:1:9; do IFS=: read -r name maj min <<< "$n"; mknod -m 666 "$ROOT/dev/$name" c "$maj" "$min"; done
rm -rf "$ROOT/opt/fid"; cp -r "$W" "$ROOT/opt/fid"
for cpu in cortex-a72 cortex-a76; do
  step chroot "$ROOT" env -i PATH=/usr/bin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1 QEMU_CPU=$cpu \
    /opt/venv-litert/bin/python /opt/fid/run.py /opt/fid "$cpu"
done
cp "$ROOT"/opt/fid/out_cortex-* "$W/"

# 3. compare
"$PY" - "$W" "$REPO/benchmarks/arm_fidelity.md" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" <<'PYEOF'
import sys, numpy as np, onnxruntime
from pathlib import Path
w, dst, when = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
from mobilenet_edge.quantize.fidelity import sqnr_db
def sqnr(f, q):  # mean over images of the per-image logits SQNR; identical logits (inf) left out, as in quantize
    v = [sqnr_db(a, b) for a, b in zip(f, q)]
    return float(np.mean([x for x in v if np.isfinite(x)]))
lines = ["# int8 fidelity on aarch64 kernels (emulated Cortex-A72 / A76) vs x86", "",
         f"Generated by `benchmarks/arm_fidelity.sh` on {when}: onnxruntime {onnxruntime.__version__} (x86 host and the "
         "aarch64 wheel in .ci/arm-check.sh's Debian bookworm root, run by qemu-user), 1 thread, the same preprocessed "
         "inputs (100 images of imagenet-calib) on every platform. Models: weights imported from Google's reference "
         "files, `quantize` with its default split (calibrate on the even half), recipes `fidelity` (default) and "
         "`plain`. Agreement and SQNR: int8 vs the same platform's fp32, on the odd half (50 images). Outputs only: "
         "emulated timings mean nothing.", "",
         "| model | platform | fp32 max abs diff vs x86 | int8 (fidelity) top-1 same as x86 int8 | int8 max abs logit diff vs x86 | fidelity: agreement / SQNR | plain: agreement / SQNR |",
         "|---|---|---|---|---|---|---|"]
for k in ["0.25_128", "0.50_160", "0.75_192"]:
    host = {m: np.load(w / f"out_x86_{k}_{m}.npy") for m in ("fp32", "fidelity", "plain")}
    for p in ["x86", "cortex-a72", "cortex-a76"]:
        r = {m: np.load(w / f"out_{p}_{k}_{m}.npy") for m in ("fp32", "fidelity", "plain")}
        ev = slice(1, None, 2)
        cells = [k.replace("_", "/"), p, f"{np.abs(r['fp32'] - host['fp32']).max():.1e}",
                 f"{np.mean(r['fidelity'].argmax(1) == host['fidelity'].argmax(1)):.0%}",
                 f"{np.abs(r['fidelity'] - host['fidelity']).max():.3f}"]
        for m in ("fidelity", "plain"):
            cells.append(f"{np.mean(r[m][ev].argmax(1) == r['fp32'][ev].argmax(1)):.0%} / {sqnr(r['fp32'][ev], r[m][ev]):.1f} dB")
        lines.append("| " + " | ".join(cells) + " |")
dst.write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
[ -n "${SUDO_UID:-}" ] && chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$REPO/benchmarks/arm_fidelity.md" || true
rm -f "$LOG"
