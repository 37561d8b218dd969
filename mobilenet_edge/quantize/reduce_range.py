"""``reduce_range`` (7-bit weights): when ORT's u8 x s8 kernels can saturate on the CPU that runs the model.
The CPU's ISA comes from :func:`mobilenet_edge.core.platform_info.detect_isa`."""

from __future__ import annotations


def decide_reduce_range(isa: dict, requested: bool | None) -> dict:
    """Choose ``reduce_range`` for the CPU that runs the model (ORT ``quantize_static`` docstring:
    "x86/x64 CPU without VNNI ... set reduce_range=True": their u8 x s8 kernels (vpmaddubsw) add pairs
    of products into int16 and can saturate; VNNI (vpdpbusd) and ARM accumulate in int32).

    Args:
        isa: :func:`~mobilenet_edge.core.platform_info.detect_isa`'s dict (``arch``, ``vnni``, ``machine``).
        requested: the user's choice (``--reduce-range`` / ``--no-reduce-range``), None for automatic.
    Returns:
        ``{"reduce_range": bool, "requested": bool|None, "reason": str, "warning": str|None, "isa": isa}``.
    """
    risky = isa["arch"] == "x86" and not isa["vnni"]
    auto = risky
    if isa["arch"] == "x86":
        why = "x86 without avx512_vnni/avx_vnni: u8 x s8 int16 pair sums can saturate" if risky else (
            "x86 with VNNI: int32 accumulation, no saturation")
    elif isa["arch"] == "arm":
        why = "ARM: int8 dot products accumulate in int32, no saturation"
    else:
        why = f"unknown architecture {isa['machine']!r}: full 8-bit range"
    warning = None
    if requested is None:
        value, reason = auto, f"auto: {why}"
        if risky:
            warning = ("this CPU has no VNNI: weights use 7 bits (reduce_range) to avoid int16 saturation; "
                       "pass --no-reduce-range for a model that will only run on ARM (Raspberry Pi) or VNNI CPUs")
    else:
        value, reason = bool(requested), f"explicit ({why})"
        if risky and not requested:
            warning = ("--no-reduce-range on an x86 CPU without VNNI: ORT's u8 x s8 kernels may saturate on this "
                       "machine (the figures measured here may be worse than on the target)")
        elif requested and not risky:
            warning = "--reduce-range on a CPU that does not need it: 7-bit weights cost precision"
    return {"reduce_range": value, "requested": requested, "reason": reason, "warning": warning, "isa": isa}
