"""Which ``.tflite`` interpreter runs here, and the guards around creating one (numpy-free, no torch).

Backends (names: :mod:`.names`): ``ai_edge_litert.interpreter`` (LiteRT, primary), else
``tflite_runtime.interpreter`` (tflite-runtime 2.14, older Pi images; needs numpy < 2).
``MOBILENET_EDGE_TFLITE=tflite-runtime`` (or ``ai-edge-litert``) forces one of them.

Guards: tflite-runtime does not verify the flatbuffer, so a file is first loaded in a child process
(:func:`probe_tflite_runtime`); TFLite's C++ INFO lines on fd 2 are captured while an interpreter is
created (:func:`quiet_stderr`), so the CLI keeps one line per error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

from ..core.errors import MobilenetEdgeError, UsageError
from .names import BACKEND_LITERT, BACKEND_TFLITE_RUNTIME, TFLITE_BACKENDS

#: environment variable forcing the .tflite backend ("ai-edge-litert" or "tflite-runtime")
TFLITE_ENV = "MOBILENET_EDGE_TFLITE"

#: environment variable: "0" skips the tflite-runtime probe
PROBE_ENV = "MOBILENET_EDGE_TFLITE_PROBE"
#: files that loaded in a probe process: (resolved path, size, mtime_ns)
_PROBED: set[tuple[str, int, int]] = set()
_PROBE_CODE = (
    "import sys\n"
    "from tflite_runtime.interpreter import Interpreter\n"
    "Interpreter(model_path=sys.argv[1]).allocate_tensors()\n"
)


def tflite_backend_name() -> str:
    """Which .tflite backend :class:`~.runner.Runner` will use here ("ai-edge-litert" or "tflite-runtime").

    Raises:
        MobilenetEdgeError: neither is installed, or the forced one is missing.
    """
    return tflite_module()[0]


def tflite_module():
    """(backend name, version, interpreter module): LiteRT, else tflite-runtime, or the one forced by
    $MOBILENET_EDGE_TFLITE.

    Raises:
        UsageError: $MOBILENET_EDGE_TFLITE names no known backend.
        MobilenetEdgeError: none is installed (or the forced one is missing).
    """
    forced = os.environ.get(TFLITE_ENV, "").strip()
    if forced and forced not in TFLITE_BACKENDS:
        raise UsageError(f"{TFLITE_ENV} must be one of {', '.join(TFLITE_BACKENDS)}, got {forced!r}")
    order = [forced] if forced else list(TFLITE_BACKENDS)
    errors = []
    for name in order:
        try:
            if name == BACKEND_LITERT:
                import ai_edge_litert
                from ai_edge_litert import interpreter as mod

                version = getattr(ai_edge_litert, "__version__", "?")
            else:
                import tflite_runtime
                from tflite_runtime import interpreter as mod

                version = getattr(tflite_runtime, "__version__", "?")
        except ImportError as e:
            errors.append(f"{name}: {e}")
            continue
        return name, version, mod
    raise MobilenetEdgeError(
        "no TFLite runtime: pip install ai-edge-litert (or tflite-runtime with numpy<2)"
        + (f" [{'; '.join(errors)}]" if forced else "")
    )


def probe_tflite_runtime(path: Path) -> None:
    """Load ``path`` once in a child process before loading it here.

    tflite-runtime 2.14 does not verify the flatbuffer: a truncated or corrupt ``.tflite`` kills the
    process with SIGSEGV inside ``Interpreter()`` (LiteRT verifies and raises ValueError instead).
    The probe turns that into a MobilenetEdgeError; it costs one interpreter start (about 0.3 s on
    x86) per file per process. ``MOBILENET_EDGE_TFLITE_PROBE=0`` skips it.

    Raises:
        MobilenetEdgeError: the child process failed to load the file (signal or error line quoted).
    """
    import subprocess

    if os.environ.get(PROBE_ENV, "1") == "0":
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _PROBED:
        return
    try:
        proc = subprocess.run([sys.executable, "-c", _PROBE_CODE, str(path)], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise MobilenetEdgeError(f"cannot load TFLite model {path}: probe failed: {one_line(e)}") from None
    if proc.returncode != 0:
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else _last_line(proc)
        if any(m in proc.stderr for m in NEWER_RUNTIME_MARKERS):  # the file is fine; the runtime is too old
            raise TfliteLoadError(path, why, "", "tflite-runtime")
        raise MobilenetEdgeError(
            f"cannot load TFLite model {path}: tflite-runtime fails on it ({why}); the file is corrupt or truncated"
        )
    _PROBED.add(key)


def _last_line(proc) -> str:
    err = proc.stderr.strip()
    return one_line(Exception(err.splitlines()[-1] if err else f"exit {proc.returncode}"))


class CapturedStderr:
    """What :func:`quiet_stderr` captured; :meth:`text` reads it ("" when nothing was redirected)."""

    def __init__(self) -> None:
        self._file = None

    def text(self) -> str:
        """Everything written to fd 2 inside the ``with`` block (UTF-8, undecodable bytes replaced)."""
        if self._file is None:
            return ""
        self._file.seek(0)
        return self._file.read().decode("utf-8", "replace")


@contextlib.contextmanager
def quiet_stderr():
    """Send C-level writes to fd 2 into a temp file while the body runs (yields a :class:`CapturedStderr`).

    Only used around interpreter creation: TFLite prints an INFO line per interpreter, which would
    break the one-line-per-error rule of the CLI. Python-level errors are unaffected. Without a real
    fd 2 (pytest capture) nothing is redirected.
    """
    cap = CapturedStderr()
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # pytest capture / no real stderr
        yield cap
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    cap._file = tempfile.TemporaryFile()
    try:
        os.dup2(cap._file.fileno(), fd)
        yield cap
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def one_line(e: Exception) -> str:
    """An exception's message on one line, at most 300 characters (its type name when empty)."""
    s = " ".join(str(e).split())
    return (s[:300] + "...") if len(s) > 300 else (s or type(e).__name__)


#: what TFLite says when a file needs ops (or op versions) this interpreter lacks: the file is fine, the
#: runtime is too old ("Didn't find op for builtin opcode 'CONV_2D' version '99' ... Are you using an old
#: TFLite binary with a newer model?")
NEWER_RUNTIME_MARKERS = ("Didn't find op for builtin opcode", "Didn't find custom op", "old TFLite binary",
                         "newer model")


class TfliteLoadError(MobilenetEdgeError):
    """A ``.tflite`` file the interpreter refused: the one wording of ``predict``, ``export --weights`` and
    ``weights import``. ``reason``: the interpreter's error on one line; ``log``: what it printed on
    stderr meanwhile (at most 200 characters), "" when nothing; ``backend``: e.g. "ai-edge-litert 2.3.0".
    ``needs_newer_runtime``: the interpreter lacks an op the file uses (not a corrupt file)."""

    def __init__(self, path: Path, reason: str, log: str, backend: str = "") -> None:
        self.path, self.reason, self.log, self.backend = path, reason, log, backend
        self.needs_newer_runtime = any(m in reason or m in log for m in NEWER_RUNTIME_MARKERS)
        why = (f"it needs a newer TFLite runtime than {backend or 'this one'} (an op or op version this runtime "
               f"lacks; the file itself may be fine): {reason}" if self.needs_newer_runtime else reason)
        super().__init__(f"cannot load TFLite model {path}: {why}" + (f" [{log}]" if log else ""))


def make_interpreter(path: str | Path, *, threads: int | None = None, allocate: bool = True, probe: bool = True,
                     **kwargs):
    """The one way a ``.tflite`` interpreter is made: the backend :func:`tflite_module` picks (LiteRT, else
    tflite-runtime, or the one forced by $MOBILENET_EDGE_TFLITE), tflite-runtime's crash probe, and
    LiteRT's INFO lines kept off stderr.

    Args:
        path: ``.tflite`` file.
        threads: ``num_threads`` (None: the interpreter's default).
        allocate: call ``allocate_tensors()`` (False: read tensors without running, as weights import does).
        probe: load a tflite-runtime file in a child process first (its crash on a corrupt file would kill
            this process); bench's workers skip it (a worker's crash is contained, and init time stays
            the interpreter's own).
        **kwargs: passed to ``Interpreter`` (e.g. ``experimental_preserve_all_tensors``).
    Returns:
        ``(interpreter, backend name, backend version)``.
    Raises:
        MobilenetEdgeError: no TFLite runtime installed.
        TfliteLoadError: the file is refused (corrupt, truncated, an op this runtime lacks).
    """
    path = Path(path)
    backend, version, mod = tflite_module()
    if probe and backend == BACKEND_TFLITE_RUNTIME:
        probe_tflite_runtime(path)
    if threads is not None:
        kwargs["num_threads"] = threads
    try:
        with quiet_stderr() as captured:  # TFLite's C++ logs ("INFO: Created ... XNNPACK delegate")
            it = mod.Interpreter(model_path=str(path), **kwargs)
            if allocate:
                it.allocate_tensors()
    except Exception as e:  # noqa: BLE001  (ValueError/RuntimeError depending on the version)
        log = " ".join(ln for ln in captured.text().split() if ln)[:200]
        raise TfliteLoadError(path, one_line(e), log, f"{backend} {version}") from None
    return it, backend, version
