"""Import every command module so it registers on the app (imported by ``main``)."""

from . import predict, summary, verify  # noqa: F401
