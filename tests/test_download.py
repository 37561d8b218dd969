"""Downloads through pooch against a real HTTP server (http.server on 127.0.0.1, in a thread) that
serves .tgz archives built here from Google's reference .tflite files (../shared/data/reference):
first download, the cache with the server stopped, a flipped byte, a body cut short, a 404, two
processes at once. MOBILENET_EDGE_WEIGHTS_URL points at the server, MOBILENET_EDGE_CACHE at tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("pooch")
pytest.importorskip("platformdirs")

from _http_server import Server  # noqa: E402
from conftest import small_disk  # noqa: E402

from mobilenet_edge.build.weights import download as D  # noqa: E402
from mobilenet_edge.build.weights.registry import lookup  # noqa: E402
from mobilenet_edge.cli import main  # noqa: E402
from mobilenet_edge.core.errors import WeightsError  # noqa: E402


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def tgz(members: dict[str, bytes]) -> bytes:
    """A .tgz like Google's (the .tflite next to other files, "./" prefixed names)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo("./" + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def server(monkeypatch, tmp_path):
    s = Server()
    monkeypatch.setenv(D.ENV_URL, s.url + "/mirror")
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def tflite_05(reference_dir) -> bytes:
    return (reference_dir / "mobilenet_v1_0.5_160_quant.tflite").read_bytes()


def serve(server: Server, entry, member_bytes: bytes, mode: str = "ok") -> str:
    body = tgz({entry.member: member_bytes, "mobilenet_v1_info.txt": b"input: input\n"})
    server.routes["/mirror/" + entry.path] = (body, mode)
    return "/mirror/" + entry.path


def cache_files(root: Path) -> list[str]:
    """Every file of the cache except lock files (empty folders do not count)."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and not p.name.endswith(".lock"))


def test_first_download_then_cache_without_server(server, tflite_05, tmp_path):
    """The pinned entry (0.5/160: sha256 of the reference file) downloads, untars and is kept; with the
    server stopped the second fetch returns the same file."""
    e = lookup("google-quant", 0.5, 160)
    route = serve(server, e, tflite_05)
    seen = []
    p = D.fetch(e, progress=lambda done, total: seen.append((done, total)))
    assert p == D.cache_path(e) and p.read_bytes() == tflite_05 and sha(p.read_bytes()) == e.sha256
    assert server.hits[route] == 1 and seen and seen[-1][0] == seen[-1][1] > 0  # the bar reached the total
    assert cache_files(D.cache_dir()) == ["google-quant/mobilenet_v1_0.5_160_quant.tflite"]
    server.stop()
    assert D.fetch(e) == p and p.read_bytes() == tflite_05


def test_flipped_byte_is_refused_and_cache_unchanged(server, tflite_05):
    e = lookup("google-quant", 0.5, 160)
    bad = bytearray(tflite_05)
    bad[len(bad) // 2] ^= 0x01
    serve(server, e, bytes(bad))
    with pytest.raises(WeightsError, match="refused, the cache is unchanged"):
        D.fetch(e)
    assert cache_files(D.cache_dir()) == []


def test_tofu_records_first_download_then_refuses_another_file(server, tflite_05, capsys):
    """No published sha256 (0.5/224): the first download is recorded and said on stderr; a later
    download of other bytes is refused and the old cache entry stays as it was."""
    e = lookup("google-quant", 0.5, 224)
    assert e.sha256 is None and e.archive_sha256 is None
    serve(server, e, tflite_05)
    assert main(["weights", "download", "google-quant/0.5/224"]) == 0
    err = capsys.readouterr().err
    assert "trust on first use" in err and sha(tflite_05) in err
    rec = json.loads((D.cache_dir() / D.TOFU_FILE).read_text())
    assert rec[e.name]["sha256"] == sha(tflite_05)
    # the cached file goes bad on disk: it is downloaded again, but the server now serves other bytes
    D.cache_path(e).write_bytes(b"corrupt")
    other = bytearray(tflite_05)
    other[100] ^= 0x01
    serve(server, e, bytes(other))
    assert main(["weights", "download", "google-quant/0.5/224"]) == 1
    err = capsys.readouterr().err
    assert "downloaded again" in err and "refused" in err
    assert D.cache_path(e).read_bytes() == b"corrupt"  # the old entry is left as it was


def test_body_cut_short_leaves_nothing(server, tflite_05):
    e = lookup("google-quant", 0.5, 160)
    serve(server, e, tflite_05, mode="cut")
    with pytest.raises(WeightsError, match="cut short"):
        D.fetch(e)
    assert cache_files(D.cache_dir()) == []


def test_404_is_one_line_naming_the_url(server, capsys):
    code = main(["weights", "download", "google-float/0.25/128"])
    err = capsys.readouterr().err.strip()
    url = server.url + "/mirror/mobilenet_v1_2018_08_02/mobilenet_v1_0.25_128.tgz"
    assert code == 1 and url in err and "404" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert cache_files(D.cache_dir()) == []


def test_no_network_names_the_url(monkeypatch, tmp_path):
    monkeypatch.setenv(D.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.setenv(D.ENV_URL, "http://127.0.0.1:9/none")  # discard port: connection refused
    with pytest.raises(WeightsError, match="no network or the server is unreachable"):
        D.fetch(lookup("keras", 0.25, 128))


def test_two_processes_at_once_give_one_good_file(server, tflite_05, tmp_path):
    e = lookup("google-quant", 0.25, 224)  # not pinned: the file must also be recorded only once
    route = serve(server, e, tflite_05, mode="slow")
    env = {**os.environ, D.ENV_URL: server.url + "/mirror", D.ENV_CACHE: str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mobilenet_edge.cli", "weights", "download", "google-quant/0.25/224", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    paths = {json.loads(o[0])["files"][0]["path"] for o in outs}
    assert paths == {str(D.cache_path(e))}
    assert D.cache_path(e).read_bytes() == tflite_05
    assert server.hits[route] == 1  # the second process waited on the lock and used the first one's file
    assert cache_files(D.cache_dir()) == ["google-quant/mobilenet_v1_0.25_224_quant.tflite", D.TOFU_FILE]


@pytest.fixture
def tiny_disk(tmp_path):
    """A 300 KB tmpfs (root only; skipped where mount is not allowed)."""
    with small_disk(tmp_path / "tiny", "300k") as d:
        yield d


def test_disk_full_cache_is_one_line_and_keeps_the_old_entries(server, tflite_05, tiny_disk, monkeypatch):
    monkeypatch.setenv(D.ENV_CACHE, str(tiny_disk))
    old = lookup("google-quant", 1.0, 128)
    D.cache_path(old).parent.mkdir(parents=True)
    D.cache_path(old).write_bytes(b"an older entry")  # stands for a file downloaded before
    (D.cache_dir() / D.TOFU_FILE).write_text(json.dumps({old.name: {"sha256": sha(b"an older entry")}}))
    before = {f: (D.cache_dir() / f).read_bytes() for f in cache_files(D.cache_dir())}
    e = lookup("google-quant", 0.5, 160)  # 1.4 MB: does not fit
    serve(server, e, tflite_05)
    with pytest.raises(WeightsError, match="No space left on device; the cache is unchanged"):
        D.fetch(e)
    assert {f: (D.cache_dir() / f).read_bytes() for f in cache_files(D.cache_dir())} == before
    assert D.cached(old) == D.cache_path(old)
