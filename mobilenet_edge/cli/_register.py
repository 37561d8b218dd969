"""Import every command module so it registers on the app (imported by ``main``)."""

from . import (
    quantize,  # noqa: F401
    summary,  # noqa: F401
)
