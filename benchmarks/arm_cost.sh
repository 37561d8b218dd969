#!/usr/bin/env bash
# What does int8 gain on a Raspberry Pi, and what do float convs cost there? No Pi here, so this counts the
# instructions each model executes per inference on onnxruntime's aarch64 build, under qemu-user as a
# Cortex-A72 (Pi 4: no dot-product instructions) and a Cortex-A76 (Pi 5: SDOT/UDOT), with a small TCG
# plugin (benchmarks/arm_icount.c). Models: the three reference variants in fp32, int8 `--recipe plain`,
# int8 `fidelity` with --float-first 2 (the default) to 27 and with int8 activations, and Google's int8
# .tflite on LiteRT (XNNPACK); with TFLITE_PYTHON also our own fp32 and int8 .tflite files on LiteRT (int8: the
# default recipe, first two convs float, and the full-integer `--float-first 0`).
#
# An instruction count is a proxy for latency, not a latency: it ignores how many instructions of each kind
# a core issues per cycle and every cache effect. Ratios between models of the same variant on the same
# core are what to read. Counts are per inference, 1 thread, after one warm-up run; they repeat to 0.2%.
#
# Needs: root (a private mount namespace puts a one-CPU /sys and the Pi's /proc/cpuinfo in place of the
# host's: onnxruntime crashes on the host's /sys under qemu), gcc, qemu-user (the dynamic qemu-aarch64: plugins need it; apt install qemu-user) and the cached
# arm64 root of .ci/arm-check.sh (run that once). About 7 minutes here, 11 with TFLITE_PYTHON.
#
# Usage: sudo bash benchmarks/arm_cost.sh [HOST_PYTHON [TFLITE_PYTHON]]   (HOST_PYTHON: a venv python with
# the export extra, default .venv/bin/python; TFLITE_PYTHON: one with the tflite-export extra, see
# docs/tflite.md). Writes benchmarks/arm_cost.md and benchmarks/arm_cost.json.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "arm_cost: needs root (mount namespace): run with sudo" >&2; exit 1; }
# Re-run in a private mount namespace; the mounts below must never reach the caller's: check that the
# namespace really differs from the one the script was started in (not just that a variable is set).
NS=$(readlink /proc/self/ns/mnt)
if [ -z "${ARM_COST_OUTER_NS:-}" ]; then
  command -v unshare >/dev/null || { echo "arm_cost: needs unshare (util-linux)" >&2; exit 1; }
  ARM_COST_OUTER_NS=$NS exec unshare -m --propagation private bash "$0" "$@"
fi
[ -n "$NS" ] && [ "$NS" != "$ARM_COST_OUTER_NS" ] || { echo "arm_cost: not in a private mount namespace" >&2; exit 1; }
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-$REPO/.venv/bin/python}
TPY=${2:-}
CACHE=${MOBILENET_EDGE_ARM_CACHE:-/var/cache/mobilenet-edge/arm64-bookworm}
ROOT=$CACHE/root
DATA=${MOBILENET_EDGE_DATA:-$REPO/../shared/data}
PREFIXES=${ARM_COST_PREFIXES:-"2 6 10 14 18 22 27"}
RUNS=5
QEMU=$(command -v qemu-aarch64 || true)
[ -n "$QEMU" ] || { echo "arm_cost: no dynamic qemu-aarch64 (apt install qemu-user; the -static one cannot load plugins)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "arm_cost: needs gcc" >&2; exit 1; }
SITE=$(ls -d "$ROOT"/opt/venv-litert/lib/python3*/site-packages 2>/dev/null | head -1 || true)
GPY=""
[ -z "$SITE" ] || GPY=$ROOT/usr/bin/$(basename "$(dirname "$SITE")")  # the python the venv was made with
[ -n "$SITE" ] && [ -x "$GPY" ] || { echo "arm_cost: no arm64 root at $ROOT: run .ci/arm-check.sh first" >&2; exit 1; }
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
export PYTHONPATH=$REPO:$REPO/benchmarks PYTHONDONTWRITEBYTECODE=1
LOG=$(mktemp /tmp/arm_cost.XXXXXX.log)
step() { "$@" >>"$LOG" 2>&1 || { tail -20 "$LOG" >&2; echo "arm_cost: FAILED: $* (log: $LOG)" >&2; exit 1; }; }

gcc -O2 -Wall -shared -fPIC -o "$W/libicount.so" "$REPO/benchmarks/arm_icount.c" -lpthread

# 1. host: bundles with imported weights; int8 by recipe plain and by fidelity with each float prefix
for v in "0.25 128 0.25_128 0.25_128" "0.5 160 0.5_160 0.50_160" "0.75 192 0.75_192 0.75_192"; do
  set -- $v
  step "$PY" -m mobilenet_edge.cli export --alpha "$1" --res "$2" --weights "$DATA/reference/mobilenet_v1_$3_quant.tflite" --out "$W/b"
  mkdir -p "$W/m$4"; mv "$W/b/mobilenet_v1_$4" "$W/m$4/fp32"
  cp "$DATA/reference/mobilenet_v1_$3_quant.tflite" "$W/m$4/google.tflite"
  for q in plain s8 $PREFIXES; do
    cp -r "$W/m$4/fp32" "$W/m$4/q$q"
    case $q in
      plain) step "$PY" -m mobilenet_edge.cli quantize "$W/m$4/q$q" --calib "$DATA/imagenet-calib" --recipe plain ;;
      s8) step "$PY" -m mobilenet_edge.cli quantize "$W/m$4/q$q" --calib "$DATA/imagenet-calib" --activations int8 ;;
      *) step "$PY" -m mobilenet_edge.cli quantize "$W/m$4/q$q" --calib "$DATA/imagenet-calib" --float-first "$q" ;;
    esac
  done
  if [ -n "$TPY" ]; then
    step "$TPY" -m mobilenet_edge.cli export --alpha "$1" --res "$2" --weights "$DATA/reference/mobilenet_v1_$3_quant.tflite" \
      --format tflite --int8 --calib "$DATA/imagenet-calib" --out "$W/t"
    mv "$W/t/mobilenet_v1_$4/model.tflite" "$W/m$4/ours_fp32.tflite"; mv "$W/t/mobilenet_v1_$4/model.int8.tflite" "$W/m$4/ours_int8.tflite"
    step "$TPY" -m mobilenet_edge.cli export --alpha "$1" --res "$2" --weights "$DATA/reference/mobilenet_v1_$3_quant.tflite" \
      --format tflite --int8 --calib "$DATA/imagenet-calib" --float-first 0 --out "$W/t" --force
    mv "$W/t/mobilenet_v1_$4/model.int8.tflite" "$W/m$4/ours_int8_fi.tflite"
  fi
done
cat > "$W/run.py" <<'PYEOF'
import os, sys
import numpy as np
path, n = sys.argv[1], int(sys.argv[2])
def mark(fd):  # seen by the plugin: close(-12345) opens the counted window, close(-12346) closes it
    try:
        os.close(fd)
    except OSError:
        pass
if path.endswith(".tflite"):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.random.default_rng(0).integers(0, 255, size=d["shape"]).astype(d["dtype"]))
    step = it.invoke
else:
    from mobilenet_edge.core.sessions import ort_session
    s = ort_session(path, threads=1)
    i = s.get_inputs()[0]
    feed = {i.name: np.random.default_rng(0).uniform(-1, 1, size=[v if isinstance(v, int) else 1 for v in i.shape]).astype(np.float32)}
    step = lambda: s.run(None, feed)
step()
mark(-12345)
for _ in range(n):
    step()
mark(-12346)
PYEOF

# 2. aarch64 under qemu-user with the counting plugin. In this mount namespace only: the host's /sys is
# replaced by a one-CPU stub and /proc/cpuinfo by the Pi's, so that the cpuinfo library inside onnxruntime
# and LiteRT parses them (no "Error in cpuinfo"); ISA features come from qemu's -cpu model (HWCAP).
declare -A PART=([cortex-a72]=0xd08 [cortex-a76]=0xd0b)
declare -A FEATURES=([cortex-a72]="fp asimd evtstrm crc32 cpuid"
  [cortex-a76]="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp")
mount -t tmpfs -o size=1m nosys /sys
mkdir -p /sys/devices/system/cpu/cpu0
for f in possible present online; do echo 0 > "/sys/devices/system/cpu/$f"; done
export W QEMU ROOT SITE GPY RUNS
count() {  # cpu variant model path
  env -i PATH=/usr/bin:/bin PYTHONPATH="$SITE" PYTHONDONTWRITEBYTECODE=1 "$QEMU" -L "$ROOT" -cpu "$1" \
    -plugin "$W/libicount.so,out=$W/c_$1_$2_$3.txt" "$GPY" "$W/run.py" "$4" "$RUNS" 2>&1 || true
  grep -q . "$W/c_$1_$2_$3.txt" && ! grep -q '^# no marker' "$W/c_$1_$2_$3.txt"
}
export -f count
for cpu in cortex-a72 cortex-a76; do
  printf 'processor\t: 0\nFeatures\t: %s\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 0\n\n' \
    "${FEATURES[$cpu]}" "${PART[$cpu]}" > "$W/cpuinfo"
  mount --bind "$W/cpuinfo" /proc/cpuinfo
  : > "$W/jobs"
  for k in 0.25_128 0.50_160 0.75_192; do
    echo "$cpu $k fp32 $W/m$k/fp32/model.onnx" >> "$W/jobs"
    echo "$cpu $k google $W/m$k/google.tflite" >> "$W/jobs"
    for q in plain s8 $PREFIXES; do echo "$cpu $k $q $W/m$k/q$q/model.int8.onnx" >> "$W/jobs"; done
    for t in ours_fp32 ours_int8 ours_int8_fi; do [ -z "$TPY" ] || echo "$cpu $k $t $W/m$k/$t.tflite" >> "$W/jobs"; done
  done
  xargs -P "$(nproc)" -L 1 bash -c 'count "$@" || { echo "arm_cost: counting failed: $*" >&2; exit 255; }' _ < "$W/jobs" >>"$LOG" 2>&1 \
    || { tail -20 "$LOG" >&2; echo "arm_cost: FAILED (log: $LOG)" >&2; exit 1; }
  umount /proc/cpuinfo
done
! grep -q "Error in cpuinfo" "$LOG" || { echo "arm_cost: cpuinfo still fails in the guest (log: $LOG)" >&2; exit 1; }
umount /sys

# 3. table
"$PY" "$REPO/benchmarks/arm_cost_table.py" "$W" "$RUNS" "$REPO/benchmarks" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PREFIXES"
[ -n "${SUDO_UID:-}" ] && chown "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$REPO"/benchmarks/arm_cost.{md,json} || true
rm -f "$LOG"
