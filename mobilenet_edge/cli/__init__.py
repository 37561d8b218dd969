"""Command-line interface (``mobilenet-edge``). Commands live in one module each."""

from . import _register  # noqa: F401  (registers the commands on ``app``)
from .app import app, main

__all__ = ["app", "main"]
