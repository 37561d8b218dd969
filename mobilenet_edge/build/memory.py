"""Refuse a variant too large to export on this machine, before torch tries."""

from __future__ import annotations

import os

from ..core.errors import UsageError
from ..core.variants import Variant


def check_memory(v: Variant, *, batch: int = 16) -> int:
    """Refuse a variant too large to export on this machine (e.g. ``--res 1000000000``), before torch tries.

    Estimate: 8 copies of the fp32 weights (model, ONNX, onnxsim, ORT, quantization) plus ``batch`` images
    of the input and the two largest activations (the stem's output, stride 2), float32, twice over.
    Returns the estimate in bytes. Raises UsageError when it exceeds the machine's physical memory.
    """
    stem_ch = v.channels[0]
    per_image = 4 * (3 * v.res**2 + 2 * ((v.res + 1) // 2) ** 2 * stem_ch)
    need = 8 * 4 * v.params + 2 * batch * per_image
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on this platform: do not guess
        return need
    if need > have:
        raise UsageError(f"alpha {v.alpha:g}, res {v.res} needs about {need / 2**30:,.0f} GiB to export; "
                         f"this machine has {have / 2**30:,.0f} GiB")
    return need
