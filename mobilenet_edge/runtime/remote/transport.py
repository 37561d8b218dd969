"""Remote commands and folder copies over OpenSSH: ``ssh``, ``rsync -e ssh``, ``scp`` (argument lists only).

A copy goes into a staging folder on the device (``DIR/.NAME.push``) that starts as hard links of the
bundle already there (rsync ``--link-dest``, or ``cp -al`` before scp), so only changed files cross the
network; :func:`swap_in` then renames it into place, keeping the previous folder until the new one is
there. An interrupted copy leaves the device's bundle untouched.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ...core.bundle import sha256_file
from ...core.errors import MobilenetEdgeError
from .hosts import Remote, rsync_shell, shell_join, ssh_command, ssh_options

#: ssh's own exit code for "could not connect / authenticate" (a remote command's codes are 0-254)
SSH_FAILED = 255
#: how to copy: rsync when both ends have it, else scp; or force one
TRANSFERS = ("auto", "rsync", "scp")


class RemoteError(MobilenetEdgeError):
    """A device could not be reached or a command on it failed; the message starts with the host."""


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run(remote: Remote, args: list[str] | str, *, timeout: float | None = None, check: bool = True,
        config: str | None = None) -> subprocess.CompletedProcess:
    """Run a command on the device: ``args`` as a list is quoted for its shell, a str is passed as written
    (a user's ``--remote-cmd``, or our own snippets). stdout/stderr are captured as text.

    Raises:
        RemoteError: ssh could not connect or authenticate (exit 255: the message is ssh's last line, e.g.
            ``Connection refused``, ``Permission denied (publickey)``), the command timed out, or (with
            ``check``) it exited non-zero.
    """
    command = args if isinstance(args, str) else shell_join(args)
    try:
        p = subprocess.run(ssh_command(remote, command, config=config), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{remote.name}: no answer within {timeout:.0f} s") from None
    except FileNotFoundError:
        raise RemoteError("the OpenSSH client (ssh) is not installed here: apt install openssh-client") from None
    if p.returncode == SSH_FAILED:
        raise RemoteError(f"{remote.name}: ssh failed: {last_line(p.stderr) or 'exit 255'}")
    if check and p.returncode != 0:
        raise RemoteError(f"{remote.name}: {last_line(p.stderr) or last_line(p.stdout) or f'exit {p.returncode}'}")
    return p


@dataclass
class CopyResult:
    """What a copy did: ``copied`` (file names sent), ``deleted`` (names gone from the old folder), ``transfer``
    (``"rsync"`` or ``"scp"``), ``bytes`` (size of the files sent)."""

    transfer: str
    copied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes: int = 0


def choose_transfer(wanted: str = "auto", *, remote_has_rsync: bool, host: str = "") -> str:
    """``"rsync"`` when both ends have it (or ``wanted == "rsync"``), else ``"scp"``.

    Raises:
        RemoteError: ``wanted`` is rsync but one end lacks it.
    """
    if wanted == "scp":
        return "scp"
    local = shutil.which("rsync") is not None
    if wanted == "rsync" and not (local and remote_has_rsync):
        raise RemoteError(f"{host}: rsync is missing {'here' if not local else 'on the device'} (try --transfer scp)")
    return "rsync" if local and remote_has_rsync else "scp"


def stage_copy(src: Path, remote: Remote, name: str, *, transfer: str, bwlimit: int | None = None,
               config: str | None = None) -> CopyResult:
    """Copy the files of the folder ``src`` into ``DIR/.NAME.push`` on the device (created; the bundle
    ``DIR/NAME`` is the basis: unchanged files are hard-linked, not sent). ``bwlimit``: KiB/s (rsync's and
    scp's ``-l`` in Kbit/s are converted).

    Raises:
        RemoteError: the copy failed (no space left, permissions, connection lost); the staging folder is
            removed when the device still answers.
    """
    stage = remote.path(f".{name}.push")
    try:
        if transfer == "rsync":
            return _rsync(src, remote, name, stage, bwlimit=bwlimit, config=config)
        return _scp(src, remote, name, stage, bwlimit=bwlimit, config=config)
    except RemoteError as e:
        try:
            run(remote, ["rm", "-rf", "--", stage], check=False, timeout=60, config=config)
            free = _free_kb(remote, config=config)
        except RemoteError:
            raise e from None
        need = sum(p.stat().st_size for p in src.iterdir() if p.is_file()) // 1024 + 1
        if free is not None and free < need and "No space left" not in str(e):
            raise RemoteError(f"{e} (no space left on the device: {free:,} kB free in {remote.dir or '~'}, "
                              f"the bundle needs {need:,} kB)") from None
        raise


def _free_kb(remote: Remote, *, config: str | None = None) -> int | None:
    """Free space (kB) of the device's filesystem holding DIR (``df -Pk``), None when unknown."""
    p = run(remote, ["df", "-Pk", "--", remote.dir or "."], check=False, timeout=60, config=config)
    rows = [ln.split() for ln in p.stdout.splitlines()[1:]]
    try:
        return int(rows[-1][3])
    except (IndexError, ValueError):
        return None


def _rsync(src: Path, remote: Remote, name: str, stage: str, *, bwlimit, config) -> CopyResult:
    """rsync into ``stage`` (which :func:`~.push.probe` created)."""
    # -r -c: content decides (not mtimes: a re-export with the same bytes sends nothing); no -t/-p, so that
    # --link-dest links every unchanged file; --delete: the stage mirrors src exactly; -W: a changed file is
    # sent whole (a re-exported model differs throughout anyway; and rsync 3.2.7's delta transfer against a
    # --link-dest basis failed its own check over ssh here: "failed verification -- update discarded")
    cmd = ["rsync", "-r", "-c", "-W", "--delete", f"--link-dest=../{name}", "--out-format=%i %n", "-e",
           rsync_shell(remote, config=config)]
    if bwlimit:
        cmd.append(f"--bwlimit={int(bwlimit)}")
    cmd += [f"{src}/", remote.copy_spec(stage + "/")]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RemoteError("rsync is not installed here: apt install rsync (or --transfer scp)") from None
    if p.returncode != 0:
        why = _rsync_error(p.stderr) or f"rsync exit {p.returncode}" + (" (error in file I/O)" if p.returncode == 11 else "")
        raise RemoteError(f"{remote.name}: copy failed: {why}")
    res = CopyResult("rsync")
    for line in p.stdout.splitlines():
        flags, _, fname = line.partition(" ")
        if flags.startswith("*deleting"):
            res.deleted.append(fname.strip())
        elif flags[:1] in ("<", ">") and not fname.endswith("/"):
            res.copied.append(fname)
            res.bytes += (src / fname).stat().st_size
    return res


def _rsync_error(stderr: str) -> str:
    """The informative line of an rsync failure: its first ``rsync: ...`` line (e.g. ``rsync: [receiver] write
    failed on ...: No space left on device (28)``), else an ssh line, else the last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith("rsync:"):
            return ln
    for ln in lines:
        if not ln.startswith(("rsync error:", "--link-dest arg does not exist")):
            return ln
    return lines[-1] if lines else ""


def _scp(src: Path, remote: Remote, name: str, stage: str, *, bwlimit, config) -> CopyResult:
    """No rsync: compare sha256 with the device's (``sha256sum``), hard-link the unchanged files into the
    stage, scp the rest."""
    files = sorted(p.name for p in src.iterdir() if p.is_file())
    old = remote.path(name)
    listing = run(remote, f"cd {shell_join([old])} 2>/dev/null && sha256sum -- {shell_join(files)} 2>/dev/null; true",
                  config=config).stdout
    theirs = {}
    for line in listing.splitlines():
        digest, _, fname = line.partition("  ")
        theirs[fname.strip()] = digest.strip()
    same = [f for f in files if theirs.get(f) == sha256_file(src / f)]
    send = [f for f in files if f not in same]
    setup = f"rm -rf -- {shell_join([stage])} && mkdir -p -- {shell_join([stage])}"
    if same:
        setup += f" && cd {shell_join([old])} && ln -- {shell_join(same)} {shell_join([_from_old(stage, old)])}"
    run(remote, setup, config=config)
    res = CopyResult("scp", copied=send, deleted=sorted(set(theirs) - set(files)))
    if send:
        cmd = ["scp", "-q", *ssh_options(remote.port, config=config, port_flag="-P")]
        if bwlimit:
            cmd += ["-l", str(int(bwlimit) * 8)]
        cmd += ["--", *[str(src / f) for f in send], remote.copy_spec(stage + "/")]
        p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            raise RemoteError(f"{remote.name}: copy failed: {last_line(p.stderr) or f'scp exit {p.returncode}'}")
        res.bytes = sum((src / f).stat().st_size for f in send)
    return res


def _from_old(stage: str, old: str) -> str:
    """``stage`` as seen from inside ``old`` (both are siblings below the same DIR, or absolute)."""
    return stage if stage.startswith("/") else "../" + stage.rsplit("/", 1)[-1]


def swap_in(remote: Remote, name: str, *, config: str | None = None) -> None:
    """Rename ``DIR/.NAME.push`` onto ``DIR/NAME``; the previous folder is moved aside first and removed
    only once the new one is in place (a crash between the two renames leaves it as ``DIR/.NAME.old``)."""
    d = remote.dir or "."
    q = shell_join
    script = (f"set -e; cd {q([d])}; rm -rf -- {q(['.' + name + '.old'])}; "
              f"if [ -e {q([name])} ]; then mv -- {q([name, '.' + name + '.old'])}; fi; "
              f"mv -- {q(['.' + name + '.push', name])}; rm -rf -- {q(['.' + name + '.old'])}")
    run(remote, script, config=config)


def send_files(files: list[Path], remote: Remote, dst: str, *, config: str | None = None) -> None:
    """scp ``files`` to ``dst`` on the device (a folder ending in ``/``, or one file's new path); symlinks
    are followed."""
    cmd = ["scp", "-q", *ssh_options(remote.port, config=config, port_flag="-P"), "--", *map(str, files),
           remote.copy_spec(dst)]
    p = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RemoteError(f"{remote.name}: copy to {dst} failed: {last_line(p.stderr) or f'scp exit {p.returncode}'}")
