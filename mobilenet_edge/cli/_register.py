"""Import every command module so it registers on the app (imported by ``main``).

Then reflow the commands' help: typer's rich help keeps the single line breaks of a docstring's second
and later paragraphs, which made ``--help`` wrap mid-sentence at the source's line ends.
"""

import inspect

from typer.core import TyperCommand

from . import bench, export, predict, push, quantize, summary, verify  # noqa: F401
from .app import Command, app
from .weights import weights_app


def _reflow(doc: str) -> str:
    """Join the lines of each paragraph; keep paragraph breaks and ``\\b`` (keep-as-is) paragraphs."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(line.strip() for line in p.splitlines()) for p in paragraphs)


for _typer_app in (app, weights_app):
    for _cmd in _typer_app.registered_commands:
        if _cmd.cls in (None, TyperCommand):  # typer fills in its own class
            _cmd.cls = Command
        if _cmd.help is None and _cmd.callback is not None and _cmd.callback.__doc__:
            _cmd.help = _reflow(_cmd.callback.__doc__)
