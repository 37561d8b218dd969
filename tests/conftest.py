"""Shared fixtures. Real data lives outside the repo (../shared/data or $MOBILENET_EDGE_DATA):
tests that need it skip with a reason when it is absent, and fail when CI=true."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOBILENET_EDGE_DATA", ROOT.parent / "shared" / "data")).resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        msg = f"real data not found at {path} (set MOBILENET_EDGE_DATA)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return _need(DATA)


@pytest.fixture(scope="session")
def images_dir(data_dir) -> Path:
    return _need(data_dir / "images")


@pytest.fixture(scope="session")
def calib_dir(data_dir) -> Path:
    return _need(data_dir / "imagenet-calib")


@pytest.fixture(scope="session")
def reference_dir(data_dir) -> Path:
    return _need(data_dir / "reference")


def has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@contextlib.contextmanager
def small_disk(path: Path, size: str):
    """A tmpfs of ``size`` (e.g. "300k") mounted on ``path`` for a disk-full test; skipped unless root may
    mount here. Unmounted lazily (``-l``: a child process such as sshd may still hold it)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
