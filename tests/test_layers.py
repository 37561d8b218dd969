"""The house rules of docs/architecture.md, checked on the source tree.

1. Every module outside ``build/`` imports with torch, onnxsim and litert_torch blocked (a fresh
   interpreter whose import system refuses them), so a Raspberry Pi without the export extra runs
   predict / eval / bench / verify / quantize.
2. The import direction, read from the source (AST, also imports inside functions): ``core`` imports
   no other layer; ``runtime`` and ``quantize`` import only ``core``; nothing but ``build`` and ``cli``
   imports ``build``; only ``build`` names torch, onnxsim or litert_torch.
3. No module over 400 lines; no function over 80 lines unless a ``# long:`` comment in it says why.
4. The Python API (``api/`` and the package root) imports ``build`` only inside functions, so
   ``import mobilenet_edge; mobilenet_edge.load(...)`` runs with torch blocked.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "mobilenet_edge"
LAYERS = ("core", "runtime", "quantize", "build", "api", "cli")
#: which layers each layer may import (docs/architecture.md); the package root may import none eagerly
ALLOWED = {
    "core": {"core"},
    "runtime": {"core", "runtime"},
    "quantize": {"core", "quantize"},
    "build": {"core", "runtime", "quantize", "build"},
    "api": {"core", "runtime", "quantize", "build", "api"},  # build only inside functions (LAZY_BUILD)
    "cli": {"core", "runtime", "quantize", "build", "api", "cli"},
}
#: layers (None: the package root) that may import ``build`` only inside a function body
LAZY_BUILD = (None, "api")
TORCH_SIDE = ("torch", "onnxsim", "litert_torch", "torchao", "ai_edge_torch")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(p for p in PKG.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = _dotted(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((mod, node.lineno))
            # "from . import runtime" names a layer through the imported name
            out += [(f"{mod}.{a.name}", node.lineno) for a in node.names]
    return out


def test_the_tree_has_the_layers():
    for layer in LAYERS:
        assert (PKG / layer / "__init__.py").is_file(), layer
    flat = [p.name for p in PKG.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert flat == [], f"modules outside the layers: {flat}"


def test_import_direction():
    bad = []
    for path in _modules():
        me = _layer(_dotted(path))
        for mod, line in _imports(path):
            top = mod.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {mod}"
            if top in TORCH_SIDE and me != "build":
                bad.append(where)
            if top != "mobilenet_edge":
                continue
            other = _layer(mod)
            if other is None:
                continue
            if me is None:  # the package root: only lazily, inside the public API functions
                if other == "build" and path.name == "__init__.py":
                    bad.append(where + " (the package root must stay torch-free)")
                continue
            if other not in ALLOWED[me]:
                bad.append(f"{where} ({me} may import {sorted(ALLOWED[me])})")
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    """:func:`_imports` minus those inside a function body or an ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    lazy = set()
    for node in ast.walk(tree):
        in_function = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        if in_function or (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            lazy |= {n.lineno for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return [(mod, line) for mod, line in _imports(path) if line not in lazy]


def test_the_api_imports_build_only_inside_functions():
    """``import mobilenet_edge`` (and ``mobilenet_edge.api``) never loads the torch side: ``export``
    imports ``build`` inside the call."""
    bad = []
    for path in _modules():
        if _layer(_dotted(path)) not in LAZY_BUILD:
            continue
        for mod, line in _module_level_imports(path):
            if mod.startswith("mobilenet_edge.build") or mod.split(".")[0] in TORCH_SIDE:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod} at module level")
    assert not bad, "\n".join(bad)


def test_the_api_loads_and_predicts_with_torch_blocked(tmp_path):
    """The Pi side of the Python API: ``import mobilenet_edge as me; me.load(bundle).predict(image)`` (and the
    int8 model) in an interpreter where torch, onnxsim and litert_torch cannot be imported."""
    from _tiny_models import tiny_bundle
    from PIL import Image

    bundle = tiny_bundle(tmp_path / "b", res=32, classes=10, int8=True)
    Image.new("RGB", (40, 30), (200, 30, 90)).save(tmp_path / "red.png")
    blocked = ", ".join(repr(m) for m in TORCH_SIDE)
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in ({blocked},):\n"
        "            raise ImportError(f'{name} is blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import mobilenet_edge as me\n"
        f"for int8 in (False, True):\n"
        f"    clf = me.load({str(bundle)!r}, int8=int8)\n"
        f"    top = clf.predict({str(tmp_path / 'red.png')!r}, top_k=3)\n"
        "    assert len(top) == 3 and all(isinstance(lbl, str) and 0 <= p <= 1 for lbl, p in top), top\n"
        "assert me.Bundle.open(" + repr(str(bundle)) + ").int8_onnx is not None\n"
        "try:\n"
        "    me.export('random', res=32)\n"
        "except me.MobilenetEdgeError as e:\n"
        "    assert 'needs torch and onnxsim' in str(e) and 'pip install' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('export ran without torch')\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in ({blocked},) or m.startswith('mobilenet_edge.build')]\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.split()[-1] == "ok", r.stderr[-3000:]


def test_every_module_outside_build_imports_without_torch():
    mods = [_dotted(p) for p in _modules() if _layer(_dotted(p)) != "build" and p.name != "__main__.py"]
    blocked = ", ".join(repr(m) for m in TORCH_SIDE)
    code = (
        "import importlib, importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in ({blocked},):\n"
        "            raise ImportError(f'{name} is blocked: the torch side is build/ only')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"for m in {mods!r}:\n"
        "    importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in ({blocked},)]\n"
        "assert not bad, bad\n"
        "print(len(" + repr(mods) + "))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.split()[-1]) == len(mods) > 20


def test_module_and_function_sizes():
    big_modules = []
    long_functions = []
    for path in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        if len(lines) > MAX_MODULE_LINES:
            big_modules.append(f"{path.relative_to(ROOT)} ({len(lines)} lines)")
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                body = "\n".join(lines[node.lineno - 1 : node.end_lineno])
                if n > MAX_FUNCTION_LINES and "# long:" not in body:
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not big_modules, f"modules over {MAX_MODULE_LINES} lines: {big_modules}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines without a '# long:' reason: {long_functions}"


@pytest.mark.parametrize("concept, pattern", [
    ("ORT session", "InferenceSession("),
    ("ORT session options", "SessionOptions("),
])
def test_one_implementation(concept, pattern):
    """One session factory: only core/sessions.py builds ONNX Runtime sessions."""
    users = [str(p.relative_to(ROOT)) for p in _modules() if pattern in p.read_text(encoding="utf-8")]
    assert users == ["mobilenet_edge/core/sessions.py"], f"{concept} built outside core/sessions.py: {users}"
