"""Import every command module so it registers on the app (imported by ``main``)."""

from . import export, quantize, summary  # noqa: F401
