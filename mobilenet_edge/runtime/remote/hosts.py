"""``HOST[:DIR]`` and ``ssh://user@host:port[/DIR]`` parsed into a :class:`Remote`, and the ssh command line.

HOST is whatever the OpenSSH client accepts (``pi@raspberrypi.local``, an alias from the ssh config,
``192.168.1.20``, ``[fe80::1]``). It is passed to ssh/rsync/scp as one element of an argument list,
never through a local shell; characters that only make sense to a shell are refused up front.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ...core.errors import UsageError

#: environment variable naming an ssh client config file (passed as ``ssh -F``); tests use it, since
#: OpenSSH reads ~/.ssh/config from the passwd home directory, not from $HOME
SSH_CONFIG_ENV = "MOBILENET_EDGE_SSH_CONFIG"
#: seconds ssh waits for the TCP connection and the key exchange (``ConnectTimeout``)
CONNECT_TIMEOUT_S = 10
#: characters a host name, user name or ssh alias never holds; they only mean something to a shell
_BAD_HOST = re.compile(r"[\s;&|$`<>()'\"\\!*?{}#~,/=]|[\x00-\x1f\x7f]")
_BAD_DIR = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Remote:
    """One device: ``dest`` as ssh takes it (``user@host`` or an alias), an optional port, and the folder
    on the device where bundles go (relative paths are relative to the login's home; "" = the home)."""

    dest: str
    port: int | None = None
    dir: str = ""
    spec: str = ""  # as the user wrote it, for messages

    @property
    def name(self) -> str:
        """The host as the user named it (without the DIR part), for messages and table columns."""
        return self.dest if self.port is None else f"{self.dest}:{self.port}"

    def path(self, *parts: str) -> str:
        """A path on the device below :attr:`dir` (POSIX, not quoted)."""
        tail = "/".join(p.strip("/") for p in parts if p)
        if not self.dir:
            return tail or "."
        return f"{self.dir.rstrip('/')}/{tail}" if tail else self.dir

    def copy_spec(self, path: str) -> str:
        """``dest:path`` for rsync / scp (an IPv6 address in brackets)."""
        user, _, host = self.dest.rpartition("@")
        if ":" in host:
            host = f"[{host}]"
        return f"{user + '@' if user else ''}{host}:{path}"


def parse_remote(spec: str) -> Remote:
    """``HOST``, ``HOST:DIR``, ``ssh://[user@]host[:port][/DIR]`` -> :class:`Remote`.

    DIR ``~/x`` becomes ``x`` (relative paths on the device start at the home folder).

    Raises:
        UsageError: empty host, a host starting with ``-``, shell metacharacters or spaces in the host,
            a bad port, control characters in DIR.
    """
    text = spec.strip()
    port = None
    if text.startswith("ssh://"):
        rest = text[len("ssh://"):]
        hostport, slash, folder = rest.partition("/")
        folder = slash + folder if folder else ""
        if folder.startswith("/~"):
            folder = folder[1:]
        dest, port = _split_port(hostport, spec)
    else:
        dest, folder = _split_dir(text)
    _check_host(dest, spec)
    if _BAD_DIR.search(folder):
        raise UsageError(f"remote folder in {spec!r} holds control characters")
    if folder in ("~", "~/"):
        folder = ""
    elif folder.startswith("~/"):
        folder = folder[2:]
    elif folder.startswith("~"):
        raise UsageError(f"remote folder {folder!r}: write it relative to the login's home or absolute (no ~user)")
    return Remote(dest=dest, port=port, dir=folder.rstrip("/") if folder != "/" else "/", spec=spec)


def _split_dir(text: str) -> tuple[str, str]:
    if text.startswith("["):  # [v6addr]:dir or user@[v6addr]:dir
        close = text.find("]")
        if close < 0:
            raise UsageError(f"unbalanced [ in host {text!r}")
        host, rest = text[1:close], text[close + 1:]
        return host, rest[1:] if rest.startswith(":") else rest
    if "@[" in text:
        user, _, rest = text.partition("@")
        host, folder = _split_dir(rest)
        return f"{user}@{host}", folder
    dest, _, folder = text.partition(":")
    return dest, folder


def _split_port(hostport: str, spec: str) -> tuple[str, int | None]:
    user, at, host = hostport.rpartition("@")
    port = None
    if host.startswith("["):
        close = host.find("]")
        host, tail = host[1:close], host[close + 1:]
        port_text = tail[1:] if tail.startswith(":") else None
    else:
        host, colon, port_text = host.partition(":")
        port_text = port_text if colon else None
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise UsageError(f"bad port in {spec!r} (expected 1-65535, got {port_text!r})")
        port = int(port_text)
    return (user + at if at else "") + host, port


def _check_host(dest: str, spec: str) -> None:
    user, _, host = dest.rpartition("@")
    if not host:
        raise UsageError(f"no host in {spec!r} (expected HOST[:DIR], user@host:DIR or ssh://user@host:port)")
    if dest.startswith("-"):
        raise UsageError(f"host {dest!r} starts with '-': not a host name")
    bad = _BAD_HOST.search(host.replace(":", "") if host.count(":") >= 2 else host) or _BAD_HOST.search(user)
    if bad:
        raise UsageError(f"host {dest!r} holds {bad.group()!r}: not a host name or ssh alias")


def ssh_options(port: int | None = None, *, config: str | None = None, port_flag: str = "-p") -> list[str]:
    """The options every ssh / scp call gets: the config file (``-F``, from ``config`` or
    :data:`SSH_CONFIG_ENV`), ``BatchMode=yes`` (never a password or host-key prompt: an unknown host key
    fails), ``ConnectTimeout``, keep-alives (a device that drops off fails within a minute), the port."""
    config = config or os.environ.get(SSH_CONFIG_ENV) or None
    opts = ["-F", config] if config else []
    opts += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
             "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
    if port is not None:
        opts += [port_flag, str(port)]
    return opts


def ssh_command(remote: Remote, command: str, *, config: str | None = None) -> list[str]:
    """``ssh [options] -- dest COMMAND``: COMMAND is one string the device's login shell runs (build it
    with :func:`shell_join`)."""
    return ["ssh", *ssh_options(remote.port, config=config), "--", remote.dest, command]


def rsync_shell(remote: Remote, *, config: str | None = None) -> str:
    """The ``rsync -e`` string: the ssh command with its options, each quoted for rsync's own splitting."""
    return " ".join(shlex.quote(a) for a in ["ssh", *ssh_options(remote.port, config=config)])


def shell_join(args: Sequence[str]) -> str:
    """A command line for the device's shell with every argument quoted (paths, names: never code)."""
    return " ".join(shlex.quote(str(a)) for a in args)
