"""push / push --install / bench --on / predict --on against a real OpenSSH server (issue #19).

The server is Debian's sshd on 127.0.0.1 at a free port (tests/_sshd.py: keys and configs in a temporary
folder). The "device" is this machine: its ``mobilenet-edge`` is a torch-free venv that the session fixture
makes with ``push --install`` itself (the first of the two installs the issue asks for). Expected values are
the files' own bytes (sha256 computed here), inode numbers (unchanged files are not rewritten) and the
local command's output for the same bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import _sshd
import pytest
from _tiny_models import tiny_bundle
from conftest import small_disk

NAME = "tiny_v1"
CI = os.environ.get("CI") == "true"


def _sha(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _inodes(folder: Path) -> dict:
    return {p.name: p.stat().st_ino for p in folder.iterdir() if p.is_file()}


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    missing = _sshd.missing_tools()
    if missing:
        msg = f"needs OpenSSH server/client and rsync (apt install openssh-server rsync): missing {missing}"
        pytest.fail(msg) if CI else pytest.skip(msg)
    srv = _sshd.start(tmp_path_factory.mktemp("sshd"))
    yield srv
    srv.stop()


def cli(server, *args, check=None, timeout=600):
    env = {**os.environ, "MOBILENET_EDGE_SSH_CONFIG": str(server.config), "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "mobilenet_edge.cli", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=timeout, cwd=server.folder)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"
    return p


@pytest.fixture(scope="session")
def device(server, tmp_path_factory):
    """The device's mobilenet-edge: a venv made by ``push --install`` (wheel of this tree, no torch)."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    first = cli(server, "push", "--install", "device", "--venv", venv, check=0, timeout=1800)
    return {"venv": venv, "cmd": str(venv / "bin" / "mobilenet-edge"), "first": first}


@pytest.fixture
def bundle(tmp_path):
    return tiny_bundle(tmp_path / "local" / NAME, int8=True)


def push(server, device, bundle, dest, *extra, check=0):
    return cli(server, "push", bundle, f"device:{dest}", "--remote-cmd", device["cmd"], *extra, check=check)


# -- no server needed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("spec, dest, port, folder", [
    ("pi@raspberrypi.local:bundles", "pi@raspberrypi.local", None, "bundles"),
    ("pi5", "pi5", None, ""),
    ("pi5:~/b/", "pi5", None, "b"),
    ("pi5:/srv/models", "pi5", None, "/srv/models"),
    ("ssh://pi@10.0.0.7:2222", "pi@10.0.0.7", 2222, ""),
    ("ssh://pi@10.0.0.7:2222/home/pi/b", "pi@10.0.0.7", 2222, "/home/pi/b"),
    ("[fe80::1]:b", "fe80::1", None, "b"),
    ("ssh://u@[::1]:22", "u@::1", 22, ""),
])
def test_parse_remote(spec, dest, port, folder):
    from mobilenet_edge.runtime.remote.hosts import parse_remote

    r = parse_remote(spec)
    assert (r.dest, r.port, r.dir) == (dest, port, folder)


def test_remote_paths():
    from mobilenet_edge.runtime.remote.hosts import parse_remote

    assert parse_remote("h").path("b") == "b" and parse_remote("h").path() == "."
    assert parse_remote("h:/").path("b") == "/b" and parse_remote("h:/srv/x/").path("b") == "/srv/x/b"
    assert parse_remote("h:d").path(".b.push") == "d/.b.push"
    assert parse_remote("pi@h:d").copy_spec("d/x/") == "pi@h:d/x/"
    assert parse_remote("[fe80::1]:d").copy_spec("d") == "[fe80::1]:d"


@pytest.mark.parametrize("spec", ["", ":x", "-oProxyCommand=touch_x", "a;b", "$(id)", "a b", "`id`", "h|x",
                                  "ssh://h:0", "ssh://h:99999", "ssh://h:2x"])
def test_parse_remote_refuses(spec):
    from mobilenet_edge.core.errors import UsageError
    from mobilenet_edge.runtime.remote.hosts import parse_remote

    with pytest.raises(UsageError):
        parse_remote(spec)


def test_ssh_command_is_an_argument_list_with_batchmode():
    from mobilenet_edge.runtime.remote.hosts import parse_remote, ssh_command

    cmd = ssh_command(parse_remote("ssh://pi@h:2222"), "true", config="/x/cfg")
    assert cmd[:3] == ["ssh", "-F", "/x/cfg"] and "BatchMode=yes" in cmd and cmd[-3:] == ["--", "pi@h", "true"]
    assert cmd[cmd.index("-p") + 1] == "2222"
    assert not any("StrictHostKeyChecking" in a for a in cmd)  # host keys stay checked


# -- against the real sshd --------------------------------------------------------------------------------


@pytest.mark.slow
def test_push_verify_then_unchanged_then_changed(server, device, bundle, tmp_path):
    dest = tmp_path / "dev"
    p = push(server, device, bundle, dest)
    assert "rsync: 4 file(s)" in p.stdout and "verify on device: OK" in p.stdout
    on_device = dest / NAME
    assert _sha(on_device) == _sha(bundle)
    assert not list(dest.glob(f".{NAME}.*"))  # no staging folder left
    before = _inodes(on_device)

    p = push(server, device, bundle, dest, "--json")
    doc = json.loads(p.stdout)["push"]
    assert doc["copied"] == [] and doc["changed"] is False and doc["verify"]["ok"]
    assert _inodes(on_device) == before  # nothing rewritten

    labels = bundle / "labels.txt"  # a changed file: one label renamed, its manifest record updated
    from mobilenet_edge.core.bundle import file_record
    from mobilenet_edge.core.manifest import Manifest

    labels.write_text(labels.read_text().replace("tench", "tench (renamed)", 1))
    m = Manifest.read(bundle)
    m.files["labels.txt"] = file_record(labels)
    m.write(bundle)
    doc = json.loads(push(server, device, bundle, dest, "--json").stdout)["push"]
    assert sorted(doc["copied"]) == ["labels.txt", "manifest.json"]
    assert _sha(on_device) == _sha(bundle)
    after = _inodes(on_device)
    assert after["model.onnx"] == before["model.onnx"] and after["model.int8.onnx"] == before["model.int8.onnx"]
    assert after["labels.txt"] != before["labels.txt"]


@pytest.mark.slow
def test_push_with_scp(server, device, bundle, tmp_path):
    dest = tmp_path / "dev"
    doc = json.loads(push(server, device, bundle, dest, "--transfer", "scp", "--json").stdout)["push"]
    assert doc["transfer"] == "scp" and sorted(doc["copied"]) == sorted(_sha(bundle))
    assert _sha(dest / NAME) == _sha(bundle)
    doc = json.loads(push(server, device, bundle, dest, "--transfer", "scp", "--json").stdout)["push"]
    assert doc["copied"] == [] and doc["changed"] is False


@pytest.mark.slow
def test_bundle_failing_local_verify_is_refused_before_any_copy(server, device, bundle, tmp_path):
    f = bundle / "model.onnx"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    dest = tmp_path / "dev"
    p = push(server, device, bundle, dest, check=1)
    assert "fails verify here, not pushed" in p.stderr and "model.onnx" in p.stderr
    assert not dest.exists()


def _big_v2(bundle: Path, mb: int) -> None:
    """The same bundle plus an unlisted file of ``mb`` MB (verify lists it as unlisted; the copy carries it)."""
    (bundle / "big.bin").write_bytes(os.urandom(mb << 20))


@pytest.mark.slow
def test_ctrl_c_mid_push_leaves_the_old_bundle(server, device, bundle, tmp_path):
    dest = tmp_path / "dev"
    push(server, device, bundle, dest)
    v1 = _sha(dest / NAME)
    _big_v2(bundle, 8)
    env = {**os.environ, "MOBILENET_EDGE_SSH_CONFIG": str(server.config)}
    proc = subprocess.Popen([sys.executable, "-m", "mobilenet_edge.cli", "push", str(bundle), f"device:{dest}",
                             "--remote-cmd", device["cmd"], "--bwlimit", "500"], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stage = dest / f".{NAME}.push"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("big" in p.name for p in stage.glob("*") if stage.is_dir()):
        time.sleep(0.1)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.5)  # mid-copy: 8 MB at 500 KiB/s takes ~16 s
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 130, errs
    assert _sha(dest / NAME) == v1  # the previous bundle, whole
    assert "big.bin" not in {p.name for p in (dest / NAME).iterdir()}
    # the next push finishes the job (rsync picks up the staging folder)
    push(server, device, bundle, dest)
    assert _sha(dest / NAME) == _sha(bundle)


@pytest.mark.slow
def test_disk_full_on_the_device(server, device, bundle, tmp_path):
    with small_disk(tmp_path / "small", "1m") as dest:
        push(server, device, bundle, dest)
        v1 = _sha(dest / NAME)
        _big_v2(bundle, 2)  # 2 MB into a 1 MB filesystem
        p = push(server, device, bundle, dest, check=1)
        # rsync's own "No space left on device" line, or (when rsync's receiver dies before relaying it, as
        # seen here under pytest) our df check of the device
        assert "No space left on device" in p.stderr or "no space left on the device" in p.stderr, p.stderr
        assert len([ln for ln in p.stderr.splitlines() if ln.strip()]) == 1
        assert _sha(dest / NAME) == v1
        assert not (dest / f".{NAME}.push").exists()  # the partial copy is cleaned away


@pytest.mark.slow
def test_auth_failure_and_refused_connection(server, bundle):
    for host, words in (("badkey", "Permission denied"), ("down", "Connection refused")):
        p = cli(server, "push", bundle, f"{host}:x", check=1)
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and host in lines[0] and words in lines[0], p.stderr


@pytest.mark.slow
def test_bad_input(server, device, bundle, tmp_path):
    mark = tmp_path / "pwned"
    for host in (f"device;touch {mark}", f"$(touch {mark})", f"device`touch {mark}`"):
        p = cli(server, "push", bundle, host, check=2)
        assert "not a host name" in p.stderr
    assert not mark.exists()
    odd = tmp_path / f"x;touch {mark}" / f"$(touch {mark})"  # DIR is quoted for the device's shell and rsync
    push(server, device, bundle, odd)
    assert _sha(odd / NAME) == _sha(bundle) and not mark.exists()
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    p = push(server, device, bundle, a_file, check=2)
    assert "is a file on the device, not a folder" in p.stderr


@pytest.mark.slow
def test_remote_without_mobilenet_edge(server, bundle, tmp_path):
    probe = subprocess.run(["ssh", "-F", str(server.config), "device",
                            "command -v mobilenet-edge || ls -d mobilenet-edge/bin/mobilenet-edge"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("this machine has a mobilenet-edge on the login's PATH or in ~/mobilenet-edge")
    p = cli(server, "push", bundle, f"device:{tmp_path / 'dev'}", check=1)
    assert "mobilenet-edge not found on the device" in p.stderr and "push --install" in p.stderr
    p = cli(server, "push", bundle, f"device:{tmp_path / 'dev'}", "--remote-cmd", "/nonexistent/mobilenet-edge", check=1)
    assert "does not run there" in p.stderr


@pytest.mark.slow
def test_push_install_twice(server, device, tmp_path):
    first = device["first"].stdout
    assert "created venv" in first and "installed mobilenet-edge" in first
    p = cli(server, "push", "--install", "device", "--venv", device["venv"], check=0)
    assert "nothing to do" in p.stdout and "created" not in p.stdout
    # torch-free, and the package comes from the wheel, not this tree
    r = subprocess.run([str(device["venv"] / "bin" / "python"), "-c",
                        "import importlib.util as u, mobilenet_edge; print(u.find_spec('torch') is None, mobilenet_edge.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path, check=True)
    no_torch, where = r.stdout.split()
    assert no_torch == "True" and "site-packages" in where


@pytest.mark.slow
def test_bench_on_two_hosts_and_one_that_refuses(server, device, bundle, tmp_path):
    fleet = tmp_path / "fleet.json"
    p = cli(server, "bench", bundle, "--on", f"device:{tmp_path / 'a'},device2:{tmp_path / 'b'},down",
            "--remote-cmd", device["cmd"], "--runs", "5", "--warmup", "1", "--json", fleet, check=1)
    failed = [ln for ln in p.stderr.splitlines() if "FAILED" in ln]
    assert len(failed) == 1 and "down" in failed[0] and "Connection refused" in failed[0]
    doc = json.loads(fleet.read_text())
    assert [h["host"] for h in doc["hosts"]] == ["device", "device2"]
    assert [f["host"] for f in doc["failures"]] == ["down"]
    from mobilenet_edge.core.manifest import Manifest

    name = Manifest.read(bundle).name  # result rows name the bundle by its manifest
    for h in doc["hosts"]:
        assert sorted(r["model"] for r in h["results"]) == [f"{name}/model.int8.onnx", f"{name}/model.onnx"]
        assert h["environment"]["arch"] == os.uname().machine
    assert "device: " in p.stdout and "device2: " in p.stdout  # a column per device
    r = cli(server, "report", fleet, check=0)
    # one table per device (issue #20: 80 columns), so model.onnx on ORT is one row in each; a table row names
    # the bundle, its precision and runtime name the file (report's "fastest ..." lines name the model too)
    rows = [ln.split() for ln in r.stdout.splitlines() if ln.startswith(f"{name} ")]
    assert [row[1:3] for row in rows].count(["fp32", "onnxruntime"]) == 2, r.stdout


@pytest.mark.slow
@pytest.mark.realdata
def test_predict_on_matches_local_predict(server, device, bundle, tmp_path, images_dir):
    imgs = [images_dir / "parrot.jpg", images_dir / "cat.bmp"]
    local = json.loads(cli(server, "predict", bundle, *imgs, "--json", "--top-k", "3", check=0).stdout)
    p = cli(server, "predict", bundle, *imgs, "--json", "--top-k", "3", "--on", f"device:{tmp_path / 'd'}",
            "--remote-cmd", device["cmd"], check=0)
    remote = json.loads(p.stdout)
    assert [r["image"] for r in remote] == [str(i) for i in imgs]
    for a, b in zip(local, remote):
        assert [e["index"] for e in a["top_k"]] == [e["index"] for e in b["top_k"]]
        assert [e["score"] for e in a["top_k"]] == pytest.approx([e["score"] for e in b["top_k"]], rel=1e-5)


@pytest.mark.slow
def test_no_verify_is_passed_to_the_devices(server, device, bundle, tmp_path):
    """Issue #20: `predict --on` / `bench --on` hand --no-verify to the device's own command. The device's
    command is a wrapper that logs its arguments before running the real one."""
    from PIL import Image

    log = tmp_path / "argv.log"
    wrapper = tmp_path / "mobilenet-edge-logged"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{device["cmd"]}" "$@"\n')
    wrapper.chmod(0o755)
    img = tmp_path / "grey.png"
    Image.new("RGB", (20, 20), (120, 120, 120)).save(img)
    dest = f"device:{tmp_path / 'd'}"
    cli(server, "predict", bundle, img, "--json", "--on", dest, "--remote-cmd", wrapper, "--no-verify", check=0)
    cli(server, "bench", bundle, "--on", dest, "--remote-cmd", wrapper, "--runs", "2", "--warmup", "0", "--no-verify",
        check=0)
    calls = [c.split() for c in log.read_text().splitlines()]
    assert any(c[0] == "predict" and "--no-verify" in c for c in calls), calls
    assert any(c[0] == "bench" and "--no-verify" in c for c in calls), calls
    cli(server, "predict", bundle, img, "--json", "--on", dest, "--remote-cmd", wrapper, check=0)
    last_predict = [c for c in (c.split() for c in log.read_text().splitlines()) if c[0] == "predict"][-1]
    assert "--no-verify" not in last_predict  # only when asked for
