"""The Python examples of the docs run as written (issue #18: "shown by a runnable example that a test
executes as written").

Every ```python block of a file is executed, in order and in one namespace, in a temporary folder where
the real test data's folders (``images/``, ``imagenet-calib/``, ... of $MOBILENET_EDGE_DATA) are linked,
as a user would run it next to their photos. What it prints is checked against the data README (with
Google's 0.5/160 weights parrot.jpg is a macaw). Add a file to ``FILES`` to check its examples too;
README.md is checked once it holds a ```python block.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings

import pytest
from conftest import DATA, ROOT, _need

#: file -> strings its examples' output must contain (expected values: the data README, the labels given);
#: an example that predicts images/parrot.jpg with Google's weights must print macaw in any file
FILES = {
    "docs/api.md": ["label='macaw'", "Prediction(label='"],
    "README.md": ["Prediction(label='macaw'", "ms p50"],
}
FIVE = ("parrot", "cat", "owl", "hot dog", "dragonfly")

pytestmark = [pytest.mark.realdata, pytest.mark.export, pytest.mark.slow]


def python_blocks(text: str) -> list[str]:
    """The bodies of the fenced ```python blocks of a Markdown text, in order."""
    return re.findall(r"^```python[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.M | re.S)


def test_python_blocks_are_found():
    text = "a\n```python\nx = 1\n```\n```bash\nls\n```\n```python\ny = 2\n```\n"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n"]


@pytest.mark.parametrize("name", sorted(FILES))
def test_examples_run_as_written(name, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("onnxsim")
    blocks = python_blocks((ROOT / name).read_text(encoding="utf-8"))
    if not blocks:
        pytest.skip(f"{name} has no ```python block")
    data = _need(DATA)
    repo = tmp_path / "repo"  # run as from a clone: ../shared/data beside it (the README's D=../shared/data)
    repo.mkdir()
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data, target_is_directory=True)
    for entry in data.iterdir():  # images/, imagenet-calib/, ... beside the example, as docs/api.md says
        if entry.is_dir():
            (repo / entry.name).symlink_to(entry, target_is_directory=True)
    monkeypatch.chdir(repo)
    out = io.StringIO()
    namespace: dict = {"__name__": "__main__"}
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, block in enumerate(blocks):
            exec(compile(block, f"{name} python block {i + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    printed = out.getvalue()
    needles = list(FILES[name])
    if "images/parrot.jpg" in "".join(blocks) and "macaw" not in " ".join(needles):
        needles.append("macaw")
    for needle in needles:
        assert needle in printed, printed
    if name == "docs/api.md":  # the fine-tuned model predicts one of its own five labels
        last = printed.strip().splitlines()[-1]
        assert any(f"label='{label}'" in last for label in FIVE), last
        assert (repo / "export" / "mobilenet_v1_0.25_128" / "model.int8.onnx").is_file()
