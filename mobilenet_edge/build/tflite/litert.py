"""litert-torch around a conversion: its import (with the install hint), its stdout progress and
torch.export's FutureWarnings switched off, and one layout-pass patch (constant pads run NHWC)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ...core.errors import MobilenetEdgeError


def import_litert_torch():
    """The ``litert_torch`` module (torchao's CUDA-kernel log line silenced during its import).

    Raises:
        MobilenetEdgeError: litert-torch is not installed (message carries the pip command; exit 1).
    """
    import logging

    # torchao (imported by litert-torch) logs "Failed to load .../_C_cutlass_90a.abi3.so" for its CUDA
    # kernels on every CPU-only machine: harmless, and not ours to show.
    tao = logging.getLogger("torchao")
    level = tao.level
    tao.setLevel(logging.ERROR)
    try:
        import litert_torch
    except ImportError as e:
        raise MobilenetEdgeError(
            f"TFLite export needs litert-torch ({e}); install it with "
            "`pip install 'mobilenet-edge[tflite-export]' torch==2.13.0`"
        ) from None
    finally:
        tao.setLevel(level)
    return litert_torch


@contextmanager
def quiet_litert_torch() -> Iterator[None]:
    """litert-torch prints its progress on *stdout* (rich console); switch it off during a call so the
    CLI's stdout stays results-only. Restores the environment variable it uses afterwards."""
    key = "LITERT_TORCH_SHOW_PROGRESS"
    old = os.environ.get(key)
    os.environ[key] = "n"
    try:
        with warnings.catch_warnings():  # torch.export's internal FutureWarnings (LeafSpec, pytree): not ours
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


@contextmanager
def nhwc_constant_pads() -> Iterator[bool]:
    """Teach litert-torch's layout pass (``optimize_layout_transposes_pass``) that a constant pad can run
    channels-last, for the duration of one conversion.

    litert-torch 0.10 has NHWC rewriters for reflection/replication pads but not for constant pads, so
    each TF-'SAME' pad is run in NCHW between two TRANSPOSE ops. In fp32 the converter folds those
    away, in int8 it does not (measured on 0.5/160: 26 TRANSPOSE + 13 PAD ops). The rewrite permutes
    the pad list from NCHW order (W, H, C, N pairs) to NHWC order (C, W, H, N pairs). Yields False and
    changes nothing if the private registries are not where 0.10 keeps them.
    """
    try:
        from litert_torch._convert.fx_passes.optimize_layout_transposes_pass import layout_check, layout_rewrite
    except ImportError:
        yield False
        return
    rewriters = getattr(layout_rewrite, "rewriters", None)
    checkers = getattr(layout_check, "nhwcable_node_checkers", None)
    nhwcable = getattr(layout_check, "NHWCable", None)
    if rewriters is None or checkers is None or nhwcable is None:
        yield False
        return
    aten = torch.ops.aten
    ops = (aten.constant_pad_nd.default, aten.pad.default)

    def checker(node: torch.fx.Node):
        mode = "constant"
        if node.target == aten.pad.default:
            mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
        ok = (
            mode == "constant"
            and layout_check.is_4d(node)
            and layout_check.is_4d(node.args[0])
            and len(node.args[1]) <= 8
        )
        return nhwcable(can_be=ok, must_be=False)

    def rewriter(node: torch.fx.Node) -> None:
        op = node.target

        def pad_nhwc(x, pad, *args, **kwargs):
            p = list(pad) + [0] * (8 - len(pad))  # NCHW pairs: W, H, C, N
            return op(x, p[4:6] + p[0:2] + p[2:4] + p[6:8], *args, **kwargs)  # NHWC pairs: C, W, H, N

        node.target = pad_nhwc

    saved = [(reg, op, reg.get(op)) for reg in (rewriters, checkers) for op in ops]
    for op in ops:
        rewriters[op] = rewriter
        checkers[op] = checker
    try:
        yield True
    finally:
        for reg, op, old in saved:
            if old is None:
                reg.pop(op, None)
            else:
                reg[op] = old
