"""``push --install``: a wheel of this package (no torch: the wheel's dependencies are the runtime half) built
here and installed on the device into a venv it creates (``python3 -m venv``, as Raspberry Pi OS Bookworm
requires). Idempotent: the venv records the sha256 of the sources its copy was built from, and a second run
with the same sources changes nothing.

The wheel is built with ``pip wheel --no-deps`` from a copy of the source tree (pyproject.toml, README.md and
the package): pip and setuptools are all it needs, and the working tree gets no ``build/`` folder.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...core.errors import MobilenetEdgeError
from . import transport
from .hosts import Remote, shell_join
from .push import DEFAULT_VENV, REMOTE_PROG

#: file in the device's venv holding the sha256 of the sources it was installed from
MARKER = ".mobilenet-edge-source.sha256"
#: seconds pip on the device may take (a first install downloads onnxruntime and numpy)
INSTALL_TIMEOUT_S = 1800
_SOURCE_FILES = ("pyproject.toml", "README.md")


def source_root() -> Path:
    """The source tree this package runs from (a checkout, ``pip install -e``).

    Raises:
        MobilenetEdgeError: the package is installed from a wheel (no pyproject.toml beside it).
    """
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file() or not (root / "mobilenet_edge").is_dir():
        raise MobilenetEdgeError("push --install builds a wheel from the source tree: run it from a checkout "
                                 "(pip install -e .); this copy is installed without its sources")
    return root


def _sources(root: Path) -> list[Path]:
    pkg = [p for p in (root / "mobilenet_edge").rglob("*") if p.is_file() and "__pycache__" not in p.parts
           and p.suffix not in (".pyc", ".pyo")]
    return sorted([root / f for f in _SOURCE_FILES if (root / f).is_file()] + pkg)


def source_digest(root: Path) -> str:
    """sha256 over the relative names and bytes of every file that goes into the wheel."""
    h = hashlib.sha256()
    for p in _sources(root):
        h.update(str(p.relative_to(root)).encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def build_wheel(root: Path, out_dir: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources into ``out_dir``; the ``.whl`` path.

    Raises:
        MobilenetEdgeError: pip failed (its last line).
    """
    with tempfile.TemporaryDirectory(prefix="mobilenet-edge-wheel-") as tmp:
        src = Path(tmp) / "src"
        for p in _sources(root):
            dst = src / p.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst)
        p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out_dir), str(src)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise MobilenetEdgeError(f"building the wheel failed: {transport.last_line(p.stderr)}")
    wheels = sorted(out_dir.glob("mobilenet_edge-*.whl"))
    if not wheels:
        raise MobilenetEdgeError(f"pip wheel wrote no mobilenet_edge wheel into {out_dir}")
    return wheels[-1]


def install(remote: Remote, *, venv: str = DEFAULT_VENV, config: str | None = None,
            say: Callable[[str], None] = print) -> dict:
    """Install this package on the device into ``venv`` (relative to the login's home, or absolute).

    Steps, each told through ``say``: create the venv if missing; compare the recorded source sha256
    with ours; when different (or the venv's command does not run) build the wheel here, copy it over,
    ``pip install`` it (dependencies from the device's index), then record the sha256.

    Returns:
        ``{"host", "venv", "created" (bool), "installed" (bool), "version" (the device's ``--version``
        line), "source_sha256", "remote_cmd"}``.
    Raises:
        RemoteError: the device is unreachable, has no ``python3 -m venv``, or pip failed there.
        MobilenetEdgeError: no source tree here, or the wheel does not build.
    """
    root = source_root()
    digest = source_digest(root)
    v = shell_join([venv])
    cmd = shell_join([f"{venv}/bin/{REMOTE_PROG}"])
    probe = (f"if [ -x {v}/bin/python ]; then echo venv=old; else python3 -m venv {v} >/dev/null && echo venv=new; fi; "
             f"echo source=$(cat {v}/{MARKER} 2>/dev/null); {cmd} --version >/dev/null 2>&1 && echo runs=yes; true")
    p = transport.run(remote, probe, config=config, timeout=300)
    facts = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    if "venv" not in facts:
        raise transport.RemoteError(f"{remote.name}: python3 -m venv {venv} failed: {transport.last_line(p.stderr)} "
                                    "(on Debian / Raspberry Pi OS: sudo apt install python3-venv)")
    created = facts["venv"] == "new"
    say(f"{remote.name}: {'created venv' if created else 'venv exists:'} {venv}")
    if facts.get("source") == digest and facts.get("runs") == "yes":
        version = transport.run(remote, f"{cmd} --version", config=config).stdout.strip()
        say(f"{remote.name}: {version} already installed from these sources ({digest[:12]}): nothing to do")
        return {"host": remote.name, "venv": venv, "created": created, "installed": False, "version": version,
                "source_sha256": digest, "remote_cmd": cmd}
    with tempfile.TemporaryDirectory(prefix="mobilenet-edge-wheel-") as tmp:
        wheel = build_wheel(root, Path(tmp))
        say(f"{remote.name}: built {wheel.name} ({wheel.stat().st_size / 1e3:.0f} kB), copying it")
        remote_wheel = f"{venv}/{wheel.name}"
        transport.send_files([wheel], remote, remote_wheel, config=config)
    w, py = shell_join([remote_wheel]), shell_join([f"{venv}/bin/python"])
    script = (f"set -e; {py} -m pip install -q --disable-pip-version-check {w}; "
              f"{py} -m pip install -q --disable-pip-version-check --force-reinstall --no-deps {w}; "
              f"rm -f {w}; echo {digest} > {v}/{MARKER}; {cmd} --version")
    say(f"{remote.name}: pip install {wheel.name} into {venv} (dependencies from the device's index)")
    p = transport.run(remote, script, check=False, config=config, timeout=INSTALL_TIMEOUT_S)
    if p.returncode != 0:
        raise transport.RemoteError(f"{remote.name}: pip install failed: {transport.last_line(p.stderr) or p.returncode}")
    version = transport.last_line(p.stdout)
    say(f"{remote.name}: installed {version} in {venv} (run it as {venv}/bin/{REMOTE_PROG})")
    return {"host": remote.name, "venv": venv, "created": created, "installed": True, "version": version,
            "source_sha256": digest, "remote_cmd": cmd}
