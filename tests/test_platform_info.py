"""platform_info: CPU/ISA description and qemu-user detection, on fake /proc/cpuinfo contents.

The fake files follow the real formats: a Raspberry Pi 4 / Pi 5 on 64-bit Raspberry Pi OS (Arm core
part numbers 0xd08 = Cortex-A72 and 0xd0b = Cortex-A76 per the Arm TRMs and Linux cputype.h; the Pi 4
has no asimddp, the Pi 5's A76 is ARMv8.2 with the dot product), an x86 server, and what an aarch64
process sees under qemu-user (the host's x86 cpuinfo up to QEMU 8.0; an emulated one with implementer
0x00, "reserved for software use", from QEMU 8.1 on).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mobilenet_edge.core import platform_info as pi


def _arm_block(n: int, features: str, part: str, variant: str = "0x0") -> str:
    return (
        f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: 3\n\n"
    )


PI4 = "".join(_arm_block(i, "fp asimd evtstrm crc32 cpuid", "0xd08") for i in range(4)) + (
    "Hardware\t: BCM2835\nRevision\t: c03114\nSerial\t\t: 100000001234abcd\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
)
PI5 = "".join(
    _arm_block(
        i,
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "0xd0b",
        "0x4",
    )
    for i in range(4)
) + ("Revision\t: d04170\nSerial\t\t: 1234abcd1234abcd\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n")


def _x86_block(n: int) -> str:
    return (
        f"processor\t: {n}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 106\n"
        "model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz\nstepping\t: 6\n"
        "flags\t\t: fpu vme sse sse2 ssse3 sse4_1 sse4_2 fma avx avx2 avx512f avx512bw avx512_vnni\n\n"
    )


X86 = _x86_block(0) + _x86_block(1)
# qemu >= 8.1 emulates /proc/cpuinfo for its "max" CPU: implementer 0, part 'Q' (0x51).
QEMU_EMULATED = (
    "processor\t: 0\nmodel name\t: ARMv8 Processor rev 0 (v8l)\nBogoMIPS\t: 100.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics asimddp i8mm sve\n"
    "CPU implementer\t: 0x00\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x051\nCPU revision\t: 0\n\n"
)
NO_ENV: dict[str, str] = {}


def test_pi4_is_a72_without_dot_product():
    cpu = pi.parse_cpuinfo(PI4)
    assert cpu["family"] == "arm"
    assert cpu["model"] == "Cortex-A72"
    assert cpu["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert cpu["processors"] == 4
    env = pi.environment(cpuinfo=PI4, machine="aarch64", env=NO_ENV, hwcaps=None)
    assert env["isa"]["asimd"] is True
    assert env["isa"]["asimddp"] is False and env["isa"]["i8mm"] is False
    assert env["device"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert env["emulated"] is False


def test_pi5_is_a76_with_dot_product():
    env = pi.environment(cpuinfo=PI5, machine="aarch64", env=NO_ENV, hwcaps=None)
    assert env["cpu_model"] == "Cortex-A76"
    assert env["isa"]["asimddp"] is True
    assert env["isa"]["i8mm"] is False  # i8mm is ARMv8.6; the A76 is ARMv8.2
    assert env["device"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert env["emulated"] is False


def test_x86_native():
    cpu = pi.parse_cpuinfo(X86)
    assert cpu["family"] == "x86"
    assert cpu["model"] == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert cpu["board"] is None  # x86's numeric "model : 106" is not a board name
    env = pi.environment(cpuinfo=X86, machine="x86_64", env=NO_ENV, hwcaps=None)
    assert env["isa"]["avx2"] and env["isa"]["avx512_vnni"]
    assert not env["isa"]["asimddp"]
    assert env["emulated"] is False and env["emulation_reason"] == "native"


def test_qemu_user_passing_host_cpuinfo_through_is_emulated():
    # QEMU <= 8.0 (Debian bookworm's 7.2): an aarch64 python reads the x86 host's /proc/cpuinfo
    emulated, reason = pi.detect_emulation(pi.parse_cpuinfo(X86), "aarch64", NO_ENV)
    assert emulated is True
    assert "x86" in reason and "aarch64" in reason


def test_qemu_emulated_cpuinfo_is_emulated():
    cpu = pi.parse_cpuinfo(QEMU_EMULATED)
    assert cpu["family"] == "arm" and cpu["implementer"] == 0
    env = pi.environment(cpuinfo=QEMU_EMULATED, machine="aarch64", env=NO_ENV, hwcaps=None)
    assert env["emulated"] is True
    assert "0x00" in env["emulation_reason"]


def test_x86_interpreter_on_arm_cpuinfo_is_emulated():
    assert pi.detect_emulation(pi.parse_cpuinfo(PI5), "x86_64", NO_ENV)[0] is True


@pytest.mark.parametrize(
    "value, cpuinfo, expected",
    [("1", PI4, True), ("true", PI4, True), ("YES", PI4, True), ("0", X86, False), ("false", X86, False)],
)
def test_env_override_wins(value, cpuinfo, expected):
    # X86 cpuinfo under an aarch64 interpreter would be detected as emulated: "0" must still win.
    emulated, _ = pi.detect_emulation(pi.parse_cpuinfo(cpuinfo), "aarch64", {"MOBILENET_EDGE_EMULATED": value})
    assert emulated is expected


def test_env_override_bad_value():
    with pytest.raises(ValueError, match="MOBILENET_EDGE_EMULATED.*'maybe'"):
        pi.detect_emulation(pi.parse_cpuinfo(PI4), "aarch64", {"MOBILENET_EDGE_EMULATED": "maybe"})


def test_empty_cpuinfo_is_not_called_emulated():
    # no /proc (macOS, a container without it): nothing to compare, no false alarm
    env = pi.environment(cpuinfo="", machine="arm64", env=NO_ENV, hwcaps=None)
    assert env["emulated"] is False
    assert not any(env["isa"].values())


def test_sys_readings(tmp_path):
    freq = tmp_path / "devices/system/cpu/cpu0/cpufreq"
    freq.mkdir(parents=True)
    (freq / "scaling_governor").write_text("ondemand\n")
    (freq / "cpuinfo_max_freq").write_text("2400000\n")  # kHz
    thermal = tmp_path / "class/thermal/thermal_zone0"
    thermal.mkdir(parents=True)
    (thermal / "temp").write_text("51950\n")  # millidegrees Celsius
    env = pi.environment(cpuinfo=PI5, machine="aarch64", env=NO_ENV, sys_root=tmp_path, hwcaps=None)
    assert env["governor"] == "ondemand"
    assert env["cpu_max_mhz"] == 2400
    assert env["cpu_temp_c"] == pytest.approx(51.95)


def test_missing_sys_readings_are_none(tmp_path):
    env = pi.environment(cpuinfo=PI4, machine="aarch64", env=NO_ENV, sys_root=tmp_path, hwcaps=None)
    assert env["governor"] is None and env["cpu_max_mhz"] is None and env["cpu_temp_c"] is None


def test_this_machine_json_and_no_heavy_imports():
    # a fresh interpreter: environment() must not import torch or any runtime (versions come from metadata)
    code = (
        "import json, sys; from mobilenet_edge.core.platform_info import environment; e = environment(); "
        "json.dumps(e); print(json.dumps(sorted(m for m in ('torch', 'onnxruntime', 'ai_edge_litert', "
        "'tflite_runtime', 'numpy') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []


def test_isa_from_hwcaps_under_emulation():
    # qemu-user with QEMU_CPU=cortex-a72 (Pi 4): /proc/cpuinfo is the x86 host's, the auxiliary
    # vector is the emulated A72's (asimd, no asimddp). The x86 flags must not leak into the record.
    env = pi.environment(cpuinfo=X86, machine="aarch64", env={"QEMU_CPU": "cortex-a72"}, hwcaps={"asimd"})
    assert env["emulated"] is True and env["emulated_cpu"] == "cortex-a72"
    assert env["cpu_model"] == "qemu-user cortex-a72 on Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert env["isa_source"] == "hwcap"
    assert env["isa"]["asimd"] and not env["isa"]["asimddp"]
    assert not env["isa"]["avx2"] and not env["isa"]["avx512_vnni"]


def test_isa_not_claimed_when_cpuinfo_describes_another_cpu():
    env = pi.environment(cpuinfo=X86, machine="aarch64", env=NO_ENV, hwcaps=None)
    assert env["isa_source"] is None and not any(env["isa"].values())
    assert env["emulated_cpu"] is None  # QEMU_CPU not set


def test_hwcaps_off_aarch64_is_none():
    import platform

    if platform.machine().lower() in ("aarch64", "arm64"):
        caps = pi.arm64_hwcaps()
        assert caps is not None and "asimd" in caps  # every ARMv8-A Linux CPU has Advanced SIMD
    else:
        assert pi.arm64_hwcaps() is None
