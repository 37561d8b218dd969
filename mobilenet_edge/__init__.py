"""mobilenet-edge: MobileNet V1 from a reference PyTorch model to an int8 file on a Raspberry Pi.

The Python API (docs/api.md)::

    import mobilenet_edge as me
    bundle = me.export("google-quant", alpha=0.5, res=160, int8=True, calib="calib/")  # torch only here
    clf = me.load(bundle, int8=True)                                                   # torch-free
    clf.predict("photo.jpg", top_k=3)                                                  # [(label, prob), ...]
    me.bench([bundle], threads=[1, 4]).rows                                            # bench --json rows

Importing this package (and its runtime half) never imports torch: the API names resolve lazily
(PEP 562) from :mod:`mobilenet_edge.api`, whose ``export`` imports the torch side inside the call. The
error types (:mod:`mobilenet_edge.core.errors`) are here too: ``except me.MobilenetEdgeError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.errors import MobilenetEdgeError, ParityError, UsageError, WeightsError

__version__ = "0.1.0"

#: the public API, resolved on first use from mobilenet_edge.api
_API = ("BenchResult", "Bundle", "Classifier", "Prediction", "bench", "create_model", "export", "load",
        "quantize_bundle")
__all__ = [*_API, "MobilenetEdgeError", "ParityError", "UsageError", "WeightsError"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .api import BenchResult, Bundle, Classifier, Prediction, bench, create_model, export, load, quantize_bundle  # noqa: F401


def __getattr__(name: str):
    if name in _API:
        from . import api

        value = getattr(api, name)
        globals()[name] = value  # once resolved, a plain attribute
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
