"""Tool versions, one collector for manifests, benchmark records and quantization records.

Versions come from installed package metadata (``importlib.metadata``), so nothing is imported to
learn them (never torch on the runtime side).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

#: what an ONNX export records (manifest ``export.tool_versions``)
EXPORT_TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "numpy")
#: what a quantization record carries (``quantization.versions``)
QUANTIZE_TOOLS = ("onnxruntime", "onnx", "numpy")
#: the .tflite conversion stack (manifest ``files["model.tflite"].tool_versions``)
TFLITE_TOOLS = ("torch", "litert-torch", "litert-converter", "ai-edge-litert", "torchao", "ai-edge-quantizer")


def dist_version(name: str) -> str | None:
    """Installed version of distribution ``name`` (e.g. ``"ai-edge-litert"``), None when absent.

    A module already imported under the same name (``-`` read as ``_``) answers when the distribution
    has another name (``onnxruntime`` installed as ``onnxruntime-gpu`` or ``onnxruntime-openvino``).
    """
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        module = sys.modules.get(name.replace("-", "_"))
        version = getattr(module, "__version__", None)
        return str(version) if version else None


def versions(names: Iterable[str], *, keep_missing: bool = True) -> dict[str, str | None]:
    """``{distribution: version}`` in the order given; a missing one maps to None, or is left out
    when ``keep_missing`` is False."""
    out = {}
    for name in names:
        v = dist_version(name)
        if v is not None or keep_missing:
            out[name] = v
    return out


def export_versions() -> dict[str, str]:
    """This package, Python and :data:`EXPORT_TOOLS` (installed ones only): manifest ``export.tool_versions``."""
    from .. import __version__

    return {"mobilenet-edge": __version__, "python": sys.version.split()[0],
            **versions(EXPORT_TOOLS, keep_missing=False)}
