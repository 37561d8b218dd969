"""``manifest.json`` as a typed structure, with its one reader and its one writer (stdlib only).

The format is docs/bundle-format.md. :class:`Manifest` holds each top-level field typed; sections
that other stages own and extend (``files`` entries, ``export``, ``quantization``) stay JSON objects,
and keys this version does not know are kept in ``extra`` and written back unchanged. A manifest that
was read is written back with its keys in the order read (null values kept); keys new to it follow in
the order export writes them, quantize's record last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from .errors import MobilenetEdgeError, UsageError

MANIFEST = "manifest.json"
LABELS = "labels.txt"
FORMAT = "mobilenet-edge-bundle"
FORMAT_VERSION = 1


@dataclass
class Manifest:
    """A bundle's ``manifest.json``.

    Attributes:
        name: bundle name, e.g. ``mobilenet_v1_0.50_160``.
        variant: ``{"alpha", "res", "num_classes", "params", "macs"}`` (params/MACs: paper Table 1 rules).
        weights: ``{"source": "random" | "tflite" | "safetensors" | ..., "file", "sha256", ...}``.
        preprocessing: :class:`~mobilenet_edge.core.images.Preprocessing` as a dict (see :attr:`prep`).
        labels: ``{"file": "labels.txt", "count", "background_index"}``.
        files: file name -> ``{"sha256", "size", "format", "precision", ...}``.
        export: exporter, opset, node counts, parity, tool versions, seconds.
        quantization: the record ``quantize`` writes (None before quantization).
        extra: any other top-level keys (e.g. a grid run's), kept as read.

    A section absent from the file is None (and stays absent when written back).
    """

    name: Optional[str] = None
    format: str = FORMAT
    format_version: Optional[int] = None
    created: Optional[str] = None
    producer: Optional[dict] = None
    variant: Optional[dict] = None
    model_config: Optional[dict] = None
    weights: Optional[dict] = None
    preprocessing: Optional[dict] = None
    labels: Optional[dict] = None
    files: Optional[dict] = None
    export: Optional[dict] = None
    quantization: Optional[dict] = None
    extra: dict = field(default_factory=dict)
    #: top-level keys in the order they were read (written back first, in that order, nulls included)
    read_order: tuple = field(default=(), repr=False, compare=False)

    #: JSON key order: the order export writes, then extra keys, then quantize's record
    _ORDER = ("format", "format_version", "name", "created", "producer", "variant", "model_config", "weights",
              "preprocessing", "labels", "files", "export")

    #: sections that are JSON objects (``weights`` may also be a plain source name)
    _OBJECTS = ("producer", "variant", "model_config", "weights", "preprocessing", "labels", "files", "export",
                "quantization")

    # -- reading --------------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "manifest", check: bool = True) -> Manifest:
        """From parsed JSON (``check``: raise MobilenetEdgeError when it is not our format)."""
        if check and (not isinstance(data, dict) or data.get("format") != FORMAT):
            raise MobilenetEdgeError(f"{where} is not a mobilenet-edge manifest")
        if check:  # a section of the wrong JSON type fails here, in one line, not later as AttributeError
            for key in cls._OBJECTS:
                value = data.get(key)
                if value is not None and not isinstance(value, dict) and not (key == "weights" and isinstance(value, str)):
                    raise MobilenetEdgeError(f"{where}: '{key}' must be a JSON object, got {_json_type(value)}")
        known = {f.name for f in fields(cls)} - {"extra", "read_order"}
        kw: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        return cls(**kw, extra={k: v for k, v in data.items() if k not in known}, read_order=tuple(data))

    @classmethod
    def read(cls, bundle: str | Path) -> Manifest:
        """Parse ``bundle/manifest.json``.

        Raises:
            UsageError: no manifest (the folder is not a bundle; exit 2).
            MobilenetEdgeError: unreadable or not JSON, or not our format.
        """
        path = Path(bundle) / MANIFEST
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            # the user named a folder that is not a bundle: a usage error (exit 2) in every command
            raise UsageError(f"{bundle} is not a bundle: no {MANIFEST}") from None
        except (OSError, ValueError) as e:
            raise MobilenetEdgeError(f"cannot read {path}: {e}") from None
        return cls.from_dict(data, where=str(path))

    # -- typed views ----------------------------------------------------------------------------------

    @property
    def weights_source(self) -> str | None:
        """``weights.source`` ("random", "tflite", "safetensors", ...) or None."""
        src = self.weights.get("source") if isinstance(self.weights, dict) else self.weights
        return str(src) if src else None

    @property
    def random_weights(self) -> bool:
        return self.weights_source == "random"

    @property
    def labels_file(self) -> str:
        """Name of the labels file inside the bundle (``labels.txt``)."""
        return (self.labels or {}).get("file", LABELS)

    def prep(self):
        """The :class:`~mobilenet_edge.core.images.Preprocessing` recorded (defaults for absent fields)."""
        from .images import Preprocessing

        return Preprocessing.from_dict(self.preprocessing or {})

    def file(self, name: str) -> dict:
        """The ``files`` entry of ``name`` ({} when absent)."""
        entry = (self.files or {}).get(name)
        return entry if isinstance(entry, dict) else {}

    # -- writing --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-ready dict: the keys read, in their order (nulls kept), then new ones in the documented
        order (a field that is None and was not read is left out), quantize's record last."""
        out: dict[str, Any] = {}
        for key in self.read_order:
            if key in self.extra:
                out[key] = self.extra[key]
            elif key in self._ORDER or key == "quantization":
                out[key] = getattr(self, key)
        for key in self._ORDER:
            if key not in out and getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update({k: v for k, v in self.extra.items() if k not in out})
        if "quantization" not in out and self.quantization is not None:
            out["quantization"] = self.quantization
        return out

    def write(self, bundle: str | Path) -> None:
        """Write ``bundle/manifest.json`` atomically (temp file + rename)."""
        from .bundle import write_json_atomic

        write_json_atomic(Path(bundle) / MANIFEST, self.to_dict())


def _json_type(value) -> str:
    """The JSON name of a parsed value's type ("a number", "a string", "a list", ...)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return "a list" if isinstance(value, list) else type(value).__name__
