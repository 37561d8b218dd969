"""``push``: a bundle checked here, copied to a device (only what changed), renamed into place, and then
checked by the device's own ``mobilenet-edge verify``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ...core.errors import MobilenetEdgeError, UsageError
from ..verify import verify_bundle
from . import transport
from .hosts import Remote, shell_join
from .transport import RemoteError

#: the venv ``push --install`` creates, relative to the login's home (docs/pi.md uses the same folder)
DEFAULT_VENV = "mobilenet-edge"
#: the device's command, looked for on its PATH, then in :data:`DEFAULT_VENV`
REMOTE_PROG = "mobilenet-edge"
#: seconds a remote verify or bench may take before the host counts as failed
VERIFY_TIMEOUT_S = 600


def check_local(bundle: Path) -> dict:
    """The bundle must pass :func:`~mobilenet_edge.runtime.verify.verify_bundle` here before any copy.

    Raises:
        UsageError: not a folder; MobilenetEdgeError: no manifest, or the first problem verify found.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise UsageError(f"push needs a bundle folder, got {bundle}")
    rep = verify_bundle(bundle)
    if not rep["ok"]:
        raise MobilenetEdgeError(f"{bundle} fails verify here, not pushed: {rep['problems'][0]}")
    return rep


def probe(remote: Remote, name: str | None = None, given: str | None = None, *, config: str | None = None) -> dict:
    """One round trip that learns what a push needs from the device, and prepares DIR.

    Creates DIR (and ``DIR/.NAME.push`` when ``name`` is given) when missing; finds the device's command:
    ``given`` (``--remote-cmd``, taken as written for its shell), else ``mobilenet-edge`` on its PATH, else
    ``~/mobilenet-edge/bin/mobilenet-edge`` (what ``push --install`` makes).

    Returns:
        ``{"cmd": the command for the device's shell, "version": its --version line, "rsync": bool,
        "exists": bool (DIR/NAME is a folder)}``.
    Raises:
        UsageError: DIR exists on the device and is not a folder (exit 2).
        RemoteError: unreachable, DIR cannot be created, no mobilenet-edge there, or ``given`` does not run.
    """
    q = shell_join
    venv_cmd = f"{DEFAULT_VENV}/bin/{REMOTE_PROG}"
    d = remote.dir or "."
    find = (f"c={q([given])}" if given else
            f"if command -v {REMOTE_PROG} >/dev/null 2>&1; then c={REMOTE_PROG}; "
            f"elif [ -x {q([venv_cmd])} ]; then c={q([venv_cmd])}; else c=; fi")
    stage = f" {q([remote.path('.' + name + '.push')])}" if name else ""
    script = (f"if [ -e {q([d])} ] && [ ! -d {q([d])} ]; then echo dir=notdir; exit 0; fi; "
              f"mkdir -p -- {q([d])}{stage} && echo dir=ok || echo dir=fail; {find}; echo \"cmd=$c\"; "
              f"[ -n \"$c\" ] && echo \"version=$(eval \"$c --version\" 2>&1 | tail -n 1)\"; "
              f"command -v rsync >/dev/null 2>&1 && echo rsync=yes; "
              + (f"[ -d {q([remote.path(name)])} ] && echo exists=yes; " if name else "") + "true")
    p = transport.run(remote, script, config=config)
    facts = dict(line.split("=", 1) for line in p.stdout.splitlines() if "=" in line)
    if facts.get("dir") == "notdir":
        raise UsageError(f"{remote.name}:{remote.dir} is a file on the device, not a folder")
    if facts.get("dir") != "ok":
        raise RemoteError(f"{remote.name}: cannot create {d}: {transport.last_line(p.stderr)}")
    cmd, version = facts.get("cmd", ""), facts.get("version", "")
    if not cmd:
        raise RemoteError(f"{remote.name}: {REMOTE_PROG} not found on the device (not on its PATH, not in "
                          f"~/{DEFAULT_VENV}): run `mobilenet-edge push --install {remote.dest}` or give --remote-cmd")
    if not version.startswith(REMOTE_PROG):
        raise RemoteError(f"{remote.name}: {cmd if given else REMOTE_PROG} does not run there: {version or 'no output'}")
    return {"cmd": cmd if given else q([cmd]), "version": version, "rsync": facts.get("rsync") == "yes",
            "exists": facts.get("exists") == "yes"}


def remote_command(remote: Remote, given: str | None = None, *, config: str | None = None) -> str:
    """The device's command string (see :func:`probe`)."""
    return probe(remote, given=given, config=config)["cmd"]


def remote_verify(remote: Remote, cmd: str, path: str, *, config: str | None = None) -> dict:
    """Run ``CMD verify PATH --json`` on the device; its report (see ``runtime.verify.verify_bundle``).

    Raises:
        RemoteError: the device's verify failed (message: its first problem) or gave no JSON.
    """
    p = transport.run(remote, f"{cmd} verify {shell_join([path])} --json", check=False, timeout=VERIFY_TIMEOUT_S,
                      config=config)
    try:
        rep = json.loads(p.stdout)
    except ValueError:
        rep = None
    if not isinstance(rep, dict):
        raise RemoteError(f"{remote.name}: verify gave no report: {transport.last_line(p.stderr) or f'exit {p.returncode}'}")
    if p.returncode != 0 or not rep.get("ok"):
        raise RemoteError(f"{remote.name}: verify of {path} failed on the device: {rep.get('error') or rep.get('problems')}")
    return rep


def push_bundle(bundle: str | Path, remote: Remote, *, remote_cmd: str | None = None, transfer: str = "auto",
                bwlimit: int | None = None, config: str | None = None,
                step: Callable[[str], None] | None = None, checked: bool = False) -> dict:
    """Copy a bundle to ``remote`` (only what changed) and verify it there.

    Order: local verify (a bundle that fails it is refused before any copy), DIR checked/created, the
    device's command found, copy into ``DIR/.NAME.push``, rename onto ``DIR/NAME``, then the device's own
    ``verify``. ``step(text)`` is told each stage (progress lines).

    Returns:
        ``{"host", "bundle", "path" (on the device), "transfer", "copied" [names], "deleted", "bytes",
        "changed" (bool), "remote_cmd", "verify" (the device's report)}``.
    Raises:
        UsageError: bad bundle or DIR is a file; MobilenetEdgeError: local verify failed;
        RemoteError: connection, copy or the device's verify failed.
    """
    step = step or (lambda _text: None)
    bundle = Path(bundle)
    name = bundle.resolve().name
    if not checked:
        step(f"verify {name} here")
        check_local(bundle)
    step("connect")
    facts = probe(remote, name, remote_cmd, config=config)
    how = transport.choose_transfer(transfer, remote_has_rsync=facts["rsync"], host=remote.name)
    step(f"copy {name} ({how})")
    res = transport.stage_copy(bundle, remote, name, transfer=how, bwlimit=bwlimit, config=config)
    changed = bool(res.copied or res.deleted) or not facts["exists"]
    if changed:
        transport.swap_in(remote, name, config=config)
    else:  # nothing to copy: the bundle on the device stays as it is
        transport.run(remote, ["rm", "-rf", "--", remote.path(f".{name}.push")], config=config)
    step(f"verify {name} on the device")
    rep = remote_verify(remote, facts["cmd"], remote.path(name), config=config)
    return {"host": remote.name, "bundle": str(bundle), "path": remote.path(name), "transfer": res.transfer,
            "copied": res.copied, "deleted": res.deleted, "bytes": res.bytes, "changed": changed,
            "remote_cmd": facts["cmd"], "remote_version": facts["version"], "verify": rep}
