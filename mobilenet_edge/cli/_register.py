"""Import every command module so it registers on the app (imported by ``main``)."""

from . import bench, export, predict, quantize, summary, verify  # noqa: F401
from .weights import weights_app  # noqa: F401
