"""The README is a front door and the docs hold the figures (issue #20, items 11 and 12).

Checks on the Markdown files themselves (no network): every relative link and ``#anchor`` resolves (anchors
by GitHub's heading-slug rule), the README has one table and stays short, its test command is the one
``.ci/run`` runs, and no page tells a user to ``pip install mobilenet-edge`` from PyPI, where the package
is not published, except as "once published".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: every Markdown page of the repository (the ignored export/ bundles hold none)
PAGES = sorted([ROOT / "README.md", ROOT / "export" / "README.md", *(ROOT / "docs").glob("*.md"),
                *(ROOT / "benchmarks").glob("*.md")])
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The page without fenced code blocks (a ``# comment`` in bash is no heading) and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link renders as its text
    text = text.replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            s = _slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def test_slug_rule_matches_github_examples():
    # GitHub's documented behaviour: punctuation removed, spaces -> '-', case folded, duplicates numbered
    assert _slug("1. Install on the Pi (no torch)") == "1-install-on-the-pi-no-torch"
    assert _slug("The grid (paper Table 6/7 variants, 1 thread)") == "the-grid-paper-table-67-variants-1-thread"
    assert _slug("`--float-first N`: more float") == "--float-first-n-more-float"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_anchors_resolve(page):
    bad = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {dest.relative_to(ROOT)}")
    assert not bad, bad


def test_readme_is_a_front_door():
    """Issue #20 item 12: what it is, the two commands, a short tour, one table, links to the docs."""
    text = (ROOT / "README.md").read_text()
    prose = FENCE.sub("", text)
    tables = re.findall(r"^\|[\s:|-]*-{3,}[\s:|-]*\|\s*$", prose, re.M)  # one separator row per table
    assert len(tables) == 1, f"{len(tables)} tables in the README; figures belong in docs/results.md"
    assert len(text.splitlines()) <= 150, len(text.splitlines())
    headings = [h.lower() for h in re.findall(r"^#+\s+(.*)$", prose, re.M)]
    assert any("quickstart" in h for h in headings) and any("tour" in h for h in headings), headings
    assert "python api" in headings, headings
    for doc in ("docs/results.md", "docs/install.md", "docs/cli.md", "benchmarks/README.md"):
        assert f"]({doc}" in text, f"README does not link {doc}"


def _readme_commands() -> list[str]:
    blocks = re.findall(r"^```bash\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)
    return [line for line in blocks[0].splitlines() if line.startswith("python3 -m venv .venv")]


def test_ci_runs_the_readme_test_command():
    """The Quickstart's second command is what .ci/run executes (split there to lint in between)."""
    setup, tests = _readme_commands()
    assert "export --alpha 0.5 --res 160" in setup and "bench export/mobilenet_v1_0.50_160" in setup
    ci = (ROOT / ".ci" / "run").read_text().replace(" -q", "")
    parts = tests.split(" && ")
    assert parts[-1].endswith("-m pytest"), tests
    for part in parts:
        assert re.search(rf"^{re.escape(part)}( |$)", ci, re.M) or f"&& {part}" in ci, f".ci/run lacks: {part}"


def test_no_pypi_install_line_until_published():
    """Issue #20 item 11: `pip install mobilenet-edge` fails (not on PyPI); a page may name it only as the
    route "once published", in the same paragraph. The wheel route and extras added to an installed copy
    (`pip install 'mobilenet-edge[openvino]'`, which pip resolves from the installed wheel) are fine."""
    bare = re.compile(r"pip install (['\"]?)mobilenet-edge\1(?![\w\[-])")
    bad = []
    for page in PAGES:
        for para in page.read_text().split("\n\n"):
            if bare.search(para) and "once" not in para.lower():
                bad.append(f"{page.relative_to(ROOT)}: {bare.search(para).group(0)!r} in {para.strip()[:80]!r}")
    assert not bad, bad
