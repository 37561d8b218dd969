"""Strict JSON, the one writer of JSON output (``--json``, records, result files): never ``NaN`` /
``Infinity`` (not JSON; ``jq`` and most parsers reject them). Non-finite floats become ``null``; ``allow_nan=False`` guards anything missed."""

from __future__ import annotations

import json
import math

import numpy as np


def finite_or_none(obj):
    """A copy of ``obj`` (dicts, lists, tuples, scalars) with every non-finite float replaced by None;
    numpy scalars become Python ``float`` / ``int``."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        obj = float(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def dumps(obj, **kwargs) -> str:
    """``json.dumps`` of :func:`finite_or_none` (obj) with ``allow_nan=False`` (other ``json.dumps``
    keyword arguments, e.g. ``indent``, pass through)."""
    return json.dumps(finite_or_none(obj), allow_nan=False, **kwargs)
