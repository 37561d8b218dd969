"""The typer app, console helpers and the error -> exit-code mapping.

Exit codes: 0 ok, 1 runtime failure (MobilenetEdgeError, ParityError, ...), 2 usage error
(bad option, ValueError from the API), 130 interrupted. Errors print one line on stderr; ``--debug``
(or MOBILENET_EDGE_DEBUG=1) shows the traceback. Command modules import heavy libraries lazily.
"""

from __future__ import annotations

import os
import sys
import traceback

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from ..core.errors import MobilenetEdgeError, UsageError

try:  # typer >= 0.22 vendors click
    from typer._click import exceptions as _cx
except ImportError:  # pragma: no cover - older typer depends on click
    from click import exceptions as _cx

_EXIT = tuple({typer.Exit, getattr(_cx, "Exit", typer.Exit)})
_ABORT = tuple({typer.Abort, getattr(_cx, "Abort", typer.Abort)})

PROG = "mobilenet-edge"
#: exit code after Ctrl-C (128 + SIGINT), with the line "mobilenet-edge: error: interrupted"
INTERRUPTED = 130


def _plain_metavars(params):
    """Arguments named in capitals, flags without a type (see :class:`Command`); returns ``params``."""
    for p in params:
        if getattr(p, "param_type_name", "") == "argument" and p.metavar is None:
            p.metavar = p.name.upper()  # also the name in "Missing argument 'MODEL'"
        elif getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""  # typer prints the metavar instead of its "<bool>"
    return params


class Group(TyperGroup):
    """The app's and ``weights``' class: flags without ``<bool>`` (``--debug``, ``--version``, ``--help``)."""

    def get_params(self, ctx):
        return _plain_metavars(super().get_params(ctx))


class Command(TyperCommand):
    """Every command's class (set in ``_register``): help in the usual CLI conventions.

    typer 0.29 writes a usage line as ``predict [OPTIONS] {model} {images}...`` and types every flag
    ``<bool>``; here arguments read ``MODEL IMAGES...`` (optional ones in brackets, a metavar such as
    eval's ``DIR`` kept as given) and flags show no type (``--int8``, ``--json``, ``--help``).
    """

    def get_params(self, ctx):
        return _plain_metavars(super().get_params(ctx))

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for p in self.get_params(ctx):
            if getattr(p, "param_type_name", "") == "argument":
                name = p.metavar + ("..." if p.nargs != 1 else "")
                pieces.append(name if p.required else f"[{name}]")
        return pieces


app = typer.Typer(
    name=PROG,
    cls=Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    help="MobileNet V1 from a reference PyTorch model to an int8 file on a Raspberry Pi.",
    epilog=(
        "Examples:\n\n"
        "  mobilenet-edge summary --alpha 0.5 --res 160\n\n"
        "  mobilenet-edge export --alpha 0.5 --res 160 --weights mobilenet_v1_0.5_160_quant.tflite\n\n"
        "  mobilenet-edge predict export/mobilenet_v1_0.50_160 photo.jpg --int8"
    ),
)

#: results go to stdout, logs and progress to stderr
out = Console(markup=False, emoji=False)  # paths may hold [brackets]: no rich markup anywhere; colour via style=
err = Console(stderr=True, markup=False, emoji=False)
if not out.is_terminal and "COLUMNS" not in os.environ:
    out.width = 160  # piped output: don't truncate tables to 80 columns
for _console in (out, err):
    if not _console.is_terminal:  # CI logs, `2> log`, pipes: a message stays one line (rich wrapped at 80
        _console.soft_wrap = True  # columns); tables still render within the console width

#: ``--help`` width when stdout is not a terminal (typer's rich help defaults to 80 columns there, which cut
#: quantize's long option names to "--symmetric-acti…"); TERMINAL_WIDTH or COLUMNS still win
HELP_WIDTH = 100
if not sys.stdout.isatty() and not os.environ.get("TERMINAL_WIDTH") and "COLUMNS" not in os.environ:
    try:
        import typer.rich_utils as _rich_utils

        _rich_utils.MAX_WIDTH = HELP_WIDTH
    except (ImportError, AttributeError):  # pragma: no cover - typer without rich help
        pass


#: ``--no-verify`` of predict, eval, bench and quantize (issue #20: a bundle's model is checked against its manifest)
NO_VERIFY_HELP = "Use a bundle's files even if their size or sha256 differ from manifest.json (said on stderr)."


def warn_no_verify(flag: bool) -> None:
    """One stderr line when ``--no-verify`` is given: the check it turns off is a safety net."""
    if flag:
        err.print("warning: --no-verify: bundle files are used without checking them against manifest.json",
                  markup=False)


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"{PROG} {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """MobileNet V1 from a reference PyTorch model to an int8 file on a Raspberry Pi."""
    if debug:
        os.environ["MOBILENET_EDGE_DEBUG"] = "1"


def _error(msg: str) -> None:
    print(f"{PROG}: error: {msg}", file=sys.stderr)


def _usage_message(e: Exception, args: list[str]) -> str:
    """One line; for a bad option value, quote the value received."""
    msg = e.format_message().replace("\n", " ")
    param = getattr(e, "param", None)
    msg = _range_message(msg, param)
    for opt in getattr(param, "opts", []) or []:
        for i, a in enumerate(args):
            if a == opt and i + 1 < len(args):
                return f"{msg} (got {args[i + 1]!r})"
            if a.startswith(opt + "="):
                return f"{msg} (got {a.split('=', 1)[1]!r})"
    return msg


def _range_message(msg: str, param) -> str:
    """An option outside its ``min=``/``max=`` range, or not a number, in our words (``--threads must be >= 1``,
    ``--threads must be an integer``) instead of the validation library's ("Input should be greater than or
    equal to 1"); other messages unchanged."""
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    opts = [o for o in getattr(param, "opts", None) or [] if o.startswith("--")]
    for words, kind in (("valid integer", "an integer"), ("valid number", "a number"), ("valid float", "a number")):
        if opts and f"Input should be a {words}" in msg:
            return f"{opts[0]} must be {kind}"
    if (lo is None and hi is None) or not opts or not any(w in msg for w in ("than", "range")):
        return msg
    bounds = [f">= {lo:g}" if lo is not None else "", f"<= {hi:g}" if hi is not None else ""]
    return f"{opts[0]} must be {' and '.join(b for b in bounds if b)}"


#: optional module -> the extra that provides it
_EXTRAS = {"torch": "export", "onnxsim": "export", "safetensors": "export", "matplotlib": "plot",
           "ai_edge_litert": "tflite", "litert_torch": "tflite-export",
           "pooch": "export", "platformdirs": "export", "h5py": "export"}  # weights by name (build/weights)


def _missing_dependency(e: ModuleNotFoundError) -> str:
    top = (e.name or "").split(".")[0]
    extra = _EXTRAS.get(top)
    if extra is None:
        return f"missing Python module {top or e}: {e}"
    pin = " torch==2.13.0" if extra in ("export", "tflite-export") else ""
    return f"this command needs {top}: pip install 'mobilenet-edge[{extra}]'{pin}"


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns (and, as a script, exits with) the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MOBILENET_EDGE_DEBUG") == "1"
    if "--debug" in args[1:]:  # accepted anywhere, not only before the command
        args = [args[0]] + [a for a in args[1:] if a != "--debug"]
    code, interrupted = 0, False
    try:
        rv = app(args=args, prog_name=PROG, standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except _cx.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "", file=sys.stderr)
        code = 2
    except _EXIT as e:
        code = e.exit_code
    except _cx.UsageError as e:
        _error(_usage_message(e, args))
        code = 2
    except _ABORT:
        _error("aborted")
        code, interrupted = INTERRUPTED, True
    except KeyboardInterrupt:
        _error("interrupted")
        code, interrupted = INTERRUPTED, True
    except (ValueError, MobilenetEdgeError) as e:
        if debug:
            traceback.print_exc()
        _error(str(e).strip().replace("\n", " "))
        code = 2 if isinstance(e, UsageError) or not isinstance(e, MobilenetEdgeError) else 1
    except ModuleNotFoundError as e:
        if debug:
            traceback.print_exc()
        _error(_missing_dependency(e))
        code = 1
    except Exception as e:  # noqa: BLE001  (last resort: one line, traceback with --debug)
        if debug:
            traceback.print_exc()
        _error(f"{type(e).__name__}: {' '.join(str(e).split())} (rerun with --debug for the traceback)")
        code = 1
    if code == INTERRUPTED and not interrupted:  # typer turns Ctrl-C into a silent Exit(130)
        _error("interrupted")
    return code


def run() -> None:  # pragma: no cover
    sys.exit(main())
