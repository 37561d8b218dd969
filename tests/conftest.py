"""Shared fixtures. Real data lives outside the repo (../shared/data or $MOBILENET_EDGE_DATA):
tests that need it skip with a reason when it is absent, and fail when CI=true."""

from __future__ import annotations

import os
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
