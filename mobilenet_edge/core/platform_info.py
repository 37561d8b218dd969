"""The machine a benchmark ran on: CPU, ISA flags that matter for int8, OS, runtime versions, and
whether the run is emulated (qemu-user) so its timings can never pass for ARM performance.

Stdlib only; reads ``/proc`` and ``/sys`` where they exist and never imports a runtime (versions come
from package metadata, so nothing heavy, and never torch, gets imported).

Emulation (qemu-user via binfmt_misc, as in ``.ci/arm-check.sh``) is detected from:

1. ``MOBILENET_EDGE_EMULATED`` = 1/true/yes or 0/false/no: an explicit override, wins;
2. an architecture mismatch: ``platform.machine()`` (the emulated CPU, e.g. aarch64) disagrees with
   the family ``/proc/cpuinfo`` describes (qemu-user up to 8.0 passes the host's x86 cpuinfo through:
   ``vendor_id``/``flags`` lines under an aarch64 interpreter);
3. ``CPU implementer : 0x00`` in an ARM cpuinfo: "reserved for software use" in the Arm ARM (MIDR_EL1);
   no silicon reports it, and QEMU's ``max`` CPU, whose /proc/cpuinfo qemu-user >= 8.1 emulates, does.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from .versions import dist_version

#: ISA flags reported by ``environment()["isa"]`` (names as Linux prints them in /proc/cpuinfo).
#: x86: avx2 / fma (fp32 GEMM), avx512_vnni / avx_vnni (int8 dot products, VPDPBUSD), amx_int8.
#: ARM: asimd (NEON), asimddp (SDOT/UDOT, ARMv8.2 dot product: Cortex-A76 / Pi 5, absent on
#: Cortex-A72 / Pi 4), i8mm (SMMLA, ARMv8.6), sve, bf16.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimd", "asimddp", "i8mm", "sve", "bf16")

#: flags that decide which int8 kernels ONNX Runtime can use (``detect_isa``, recorded with each
#: quantization): avx2 / avx512bw / sse4_1 (u8 x s8 pair sums, vpmaddubsw), avx512_vnni / avx_vnni
#: (int32 accumulation, vpdpbusd), asimddp / i8mm (ARM dot products).
INT8_KERNEL_FLAGS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "asimddp", "i8mm", "sse4_1")

X86_MACHINES = ("x86_64", "amd64", "i386", "i486", "i586", "i686", "x86")
ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l", "armv6l", "arm")

#: Arm Ltd (implementer 0x41) part numbers -> core name (Linux arch/arm64/include/asm/cputype.h).
ARM_PARTS = {
    0xD03: "Cortex-A53",
    0xD04: "Cortex-A35",
    0xD05: "Cortex-A55",
    0xD07: "Cortex-A57",
    0xD08: "Cortex-A72",
    0xD09: "Cortex-A73",
    0xD0A: "Cortex-A75",
    0xD0B: "Cortex-A76",
    0xD0C: "Neoverse-N1",
    0xD0D: "Cortex-A77",
    0xD40: "Neoverse-V1",
    0xD41: "Cortex-A78",
    0xD44: "Cortex-X1",
    0xD46: "Cortex-A510",
    0xD47: "Cortex-A710",
    0xD48: "Cortex-X2",
    0xD49: "Neoverse-N2",
    0xD4F: "Neoverse-V2",
}

#: aarch64 Linux hardware capability bits: (auxv type, bit) per flag; AT_HWCAP = 16, AT_HWCAP2 = 26
#: (include/uapi/linux/auxvec.h), bits from arch/arm64/include/uapi/asm/hwcap.h.
ARM64_HWCAPS = {"asimd": (16, 1), "asimddp": (16, 20), "sve": (16, 22), "i8mm": (26, 13), "bf16": (26, 14)}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_cpuinfo(text: str) -> dict:
    """``/proc/cpuinfo`` text -> a summary of its first processor block (plus machine-wide lines).

    Returns:
        ``{"family": "x86" | "arm" | None, "model": str | None, "flags": set[str],
        "implementer": int | None, "part": int | None, "board": str | None, "processors": int}``.
        ``model`` is x86's ``model name``, else the Arm core name from implementer/part
        (e.g. ``"Cortex-A72"``), else the ``Hardware`` line. ``board`` is the Raspberry Pi ``Model`` line.
    """
    first: dict[str, str] = {}
    machine_wide: dict[str, str] = {}
    processors = 0
    block = 0
    for line in text.splitlines():
        if not line.strip():
            block += 1 if first else 0
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
        if processors <= 1 and block == 0:
            first.setdefault(key, value)
        else:
            machine_wide.setdefault(key, value)
    get = lambda k: first.get(k, machine_wide.get(k))  # noqa: E731

    flags = set((get("flags") or get("features") or "").split())
    implementer = _int(get("cpu implementer"))
    part = _int(get("cpu part"))
    if get("vendor_id") is not None or get("flags") is not None:
        family = "x86"
    elif implementer is not None or get("features") is not None:
        family = "arm"
    else:
        family = None
    model = get("model name")
    if (family == "arm" and model is None) or (model is not None and model.startswith("ARMv")):
        if implementer == 0x41 and part in ARM_PARTS:
            model = ARM_PARTS[part]
        elif implementer is not None:
            model = f"implementer 0x{implementer:02x} part 0x{part or 0:03x}"
        else:
            model = get("hardware") or model
    board = machine_wide.get("model") or first.get("model")
    if board is not None and board.isdigit():  # x86's numeric "model" field is not a board
        board = None
    return {
        "family": family,
        "model": model,
        "flags": flags,
        "implementer": implementer,
        "part": part,
        "board": board,
        "processors": processors,
    }


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        return None


def machine_family(machine: str) -> str | None:
    """``platform.machine()`` -> ``"x86"``, ``"arm"`` or None (other or unknown)."""
    m = machine.lower()
    if m in X86_MACHINES:
        return "x86"
    if m in ARM_MACHINES or m.startswith("armv"):
        return "arm"
    return None


def detect_emulation(cpu: dict, machine: str, env: Mapping[str, str] | None = None) -> tuple[bool, str]:
    """Is this process running under a user-mode emulator (qemu-user)?

    Args:
        cpu: ``parse_cpuinfo`` output.
        machine: ``platform.machine()`` of this interpreter.
        env: environment (default ``os.environ``); ``MOBILENET_EDGE_EMULATED`` overrides the detection.
    Returns:
        ``(emulated, reason)``; the reason says which signal decided.
    Raises:
        ValueError: ``MOBILENET_EDGE_EMULATED`` set to something other than 1/0/true/false/yes/no.
    """
    env = os.environ if env is None else env
    override = env.get("MOBILENET_EDGE_EMULATED", "").strip().lower()
    if override:
        if override in _TRUE:
            return True, "MOBILENET_EDGE_EMULATED is set"
        if override in _FALSE:
            return False, "MOBILENET_EDGE_EMULATED=0"
        raise ValueError(f"MOBILENET_EDGE_EMULATED must be 1 or 0 (true/false), got {override!r}")
    want = machine_family(machine)
    if want and cpu.get("family") and cpu["family"] != want:
        return True, f"{machine} interpreter on a {cpu['family']} CPU (/proc/cpuinfo): qemu-user"
    if want == "arm" and cpu.get("implementer") == 0:
        return True, "CPU implementer 0x00 (software use): QEMU's emulated CPU"
    return False, "native"


def arm64_hwcaps() -> set[str] | None:
    """ISA flags of the CPU this process runs on, from the kernel's (or qemu-user's) auxiliary vector.

    Unlike /proc/cpuinfo, which qemu-user up to 8.0 passes through from the x86 host, the auxiliary
    vector describes the emulated CPU (``QEMU_CPU=cortex-a72`` has no asimddp, ``cortex-a76`` has it).

    Returns:
        the subset of ``ARM64_HWCAPS`` names present, or None off aarch64 Linux / when unreadable.
    """
    if not sys.platform.startswith("linux") or platform.machine().lower() not in ("aarch64", "arm64"):
        return None
    import ctypes

    try:
        getauxval = ctypes.CDLL(None).getauxval
    except (OSError, AttributeError):
        return None
    getauxval.restype, getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    caps = {t: getauxval(t) for t in (16, 26)}
    return {name for name, (t, bit) in ARM64_HWCAPS.items() if caps[t] >> bit & 1}


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def _os_name() -> str:
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def _throttled() -> str | None:
    """``vcgencmd get_throttled`` on a Raspberry Pi (e.g. ``"0x0"``: never throttled), else None."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=2).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().partition("=")[2] or None


def _usable_cores(cpu: dict) -> int | None:
    """Logical CPUs this process may run on (affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or cpu["processors"] or None


def _cpu_state(sys_root: Path) -> dict:
    """``governor``, ``cpu_max_mhz`` and ``cpu_temp_c`` of CPU 0 from ``sys_root`` (None when unreadable)."""
    cpufreq = sys_root / "devices/system/cpu/cpu0/cpufreq"
    max_khz = _int(_read(cpufreq / "cpuinfo_max_freq"))
    temp = _int(_read(sys_root / "class/thermal/thermal_zone0/temp"))
    return {
        "governor": _read(cpufreq / "scaling_governor"),
        "cpu_max_mhz": max_khz // 1000 if max_khz else None,
        "cpu_temp_c": temp / 1000 if temp is not None else None,
    }


def environment(
    *,
    cpuinfo: str | None = None,
    machine: str | None = None,
    env: Mapping[str, str] | None = None,
    sys_root: str | Path = "/sys",
    hwcaps: set[str] | None | bool = True,
) -> dict:
    """Describe this machine for a benchmark record (JSON-ready).

    Args:
        cpuinfo: ``/proc/cpuinfo`` text (read from the machine when None; tests pass fakes).
        machine: ``platform.machine()`` override (tests).
        env: environment override (tests; default ``os.environ``).
        sys_root: where ``/sys`` is (tests); the CPU governor, max frequency and temperature come from it.
        hwcaps: aarch64 flags from the auxiliary vector (``True``: read them, ``arm64_hwcaps()``; tests
            pass a set, or None for "not available").
    Returns:
        dict with ``cpu_model`` (under qemu-user with the host's cpuinfo: ``"qemu-user cortex-a72 on
        AMD EPYC"``), ``device`` (board, e.g. "Raspberry Pi 5 Model B Rev 1.0", else the
        CPU model), ``arch``, ``cores`` (logical CPUs usable by this process), ``isa`` (bool per
        ``ISA_FLAGS`` name; on aarch64 from the auxiliary vector, else from /proc/cpuinfo when it
        describes this architecture; ``isa_source`` says which, None when neither does), ``os``, ``kernel``, ``python``, ``numpy`` / ``onnxruntime`` / ``openvino`` /
        ``ai_edge_litert`` / ``tflite_runtime`` versions (None when not installed), ``governor``,
        ``cpu_max_mhz``, ``cpu_temp_c`` (None when unreadable), ``throttled`` (``vcgencmd
        get_throttled``, Pi only), ``emulated`` (bool), ``emulation_reason``, ``emulated_cpu``
        (qemu's ``QEMU_CPU`` when emulated and set).
    Raises:
        ValueError: ``MOBILENET_EDGE_EMULATED`` has a value other than 1/0/true/false/yes/no.
    """
    if cpuinfo is None:
        cpuinfo = _read("/proc/cpuinfo") or ""
    machine = platform.machine() if machine is None else machine
    cpu = parse_cpuinfo(cpuinfo)
    emulated, reason = detect_emulation(cpu, machine, env)
    if hwcaps is True:
        hwcaps = arm64_hwcaps()
    flags, isa_source = cpu_flags(cpu, machine, hwcaps)
    environ = os.environ if env is None else env
    qemu_cpu = environ.get("QEMU_CPU") if emulated else None
    cpu_model = cpu["model"] or platform.processor() or None
    if emulated and cpu["family"] is not None and cpu["family"] != machine_family(machine):
        # /proc/cpuinfo names the host: say what runs, so merged reports keep emulated CPUs apart
        cpu_model = f"qemu-user {qemu_cpu or 'max'} on {cpu_model or cpu['family']}"
    board = cpu["board"] or _read("/proc/device-tree/model")
    return {
        "cpu_model": cpu_model,
        "device": board or cpu_model or machine,
        "arch": machine,
        "cores": _usable_cores(cpu),
        "isa": {f: f in flags for f in ISA_FLAGS},
        "isa_source": isa_source,
        "os": _os_name(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": sys.implementation.name,
        "numpy": dist_version("numpy"),
        "onnxruntime": dist_version("onnxruntime"),
        "openvino": dist_version("openvino"),
        "ai_edge_litert": dist_version("ai-edge-litert"),
        "tflite_runtime": dist_version("tflite-runtime"),
        **_cpu_state(Path(sys_root)),
        "throttled": _throttled(),
        "emulated": emulated,
        "emulation_reason": reason,
        "emulated_cpu": qemu_cpu,
    }


def cpu_flags(cpu: dict, machine: str, hwcaps: set[str] | None) -> tuple[set[str], str | None]:
    """The ISA flags of the CPU this process runs on, and where they came from.

    On aarch64 the auxiliary vector (``hwcaps``) describes the CPU that runs us, emulated or not;
    elsewhere ``/proc/cpuinfo`` does when it describes this architecture (under qemu-user it may
    describe the host: then no flag is claimed).

    Returns:
        ``(flags, source)`` with source ``"hwcap"``, ``"cpuinfo"`` or None (no trustworthy source).
    """
    if hwcaps is not None and machine_family(machine) == "arm":
        return set(hwcaps), "hwcap"
    if cpu["family"] is not None and cpu["family"] == machine_family(machine):
        return set(cpu["flags"]), "cpuinfo"
    return set(), None


def detect_isa(cpuinfo: str | Path = "/proc/cpuinfo", machine: str | None = None,
               hwcaps: set[str] | None | bool = True) -> dict:
    """CPU architecture and the instruction-set flags that matter for int8 kernels.

    Args:
        cpuinfo: path of a ``/proc/cpuinfo`` file (tests pass fakes).
        machine: ``platform.machine()`` override.
        hwcaps: as for :func:`environment` (``True``: read the auxiliary vector on aarch64).
    Returns:
        ``{"machine", "arch" ("x86"|"arm"|"other"), "vnni" (avx512_vnni or avx_vnni), "flags": [...]}``
        where ``flags`` lists the :data:`INT8_KERNEL_FLAGS` of :func:`cpu_flags`. An unreadable cpuinfo
        gives empty flags.
    """
    machine = machine or platform.machine()
    arch = machine_family(machine) or "other"
    try:
        cpu = parse_cpuinfo(Path(cpuinfo).read_text(errors="replace"))
    except OSError:
        cpu = parse_cpuinfo("")
    flags, _ = cpu_flags(cpu, machine, arm64_hwcaps() if hwcaps is True else hwcaps)
    relevant = sorted(flags & set(INT8_KERNEL_FLAGS))
    return {"machine": machine, "arch": arch, "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}), "flags": relevant}
