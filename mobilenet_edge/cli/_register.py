"""Import every command module so it registers on the app (imported by ``main``)."""

from . import export, predict, summary, verify  # noqa: F401
