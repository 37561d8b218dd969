"""A real OpenSSH server for the remote tests: Debian's ``/usr/sbin/sshd`` on 127.0.0.1 at a free port, with a
host key, an authorized client key and its own sshd_config, all in a temporary folder (no system config
touched; only /run/sshd, sshd's privilege-separation folder, is created when missing). The client side is
an ssh config file (``MOBILENET_EDGE_SSH_CONFIG``) with these aliases:

* ``device``, ``device2``: this machine through the test sshd (the authorized key);
* ``badkey``: the same server with a key it does not know (auth failure);
* ``down``: a port where nothing listens (connection refused).

Host keys are checked against a known_hosts file written from the generated host key
(``StrictHostKeyChecking yes``), as a user's would be.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True)


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    config: Path  # client ssh config (ssh -F)
    folder: Path
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def missing_tools() -> list[str]:
    return [t for t in ("ssh", "ssh-keygen", "scp", "rsync") if shutil.which(t) is None] + (
        [] if SSHD.is_file() else [str(SSHD)])


def start(folder: Path) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key", "stranger_key"):
        _keygen(folder / name)
    (folder / "authorized_keys").write_text((folder / "client_key.pub").read_text())
    port, closed = free_port(), free_port()
    sshd_config = folder / "sshd_config"
    sshd_config.write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder / 'host_key'}
PidFile {folder / 'sshd.pid'}
AuthorizedKeysFile {folder / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
MaxStartups 64
MaxSessions 64
Subsystem sftp internal-sftp
LogLevel VERBOSE
""")
    host_pub = (folder / "host_key.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    user = getpass.getuser()
    common = f"    HostName 127.0.0.1\n    Port {port}\n    User {user}\n    IdentitiesOnly yes\n"
    config = folder / "ssh_config"
    config.write_text(
        f"Host device device2\n{common}    IdentityFile {folder / 'client_key'}\n\n"
        f"Host badkey\n{common}    IdentityFile {folder / 'stranger_key'}\n\n"
        f"Host down\n    HostName 127.0.0.1\n    Port {closed}\n    User {user}\n\n"
        f"Host *\n    UserKnownHostsFile {folder / 'known_hosts'}\n    GlobalKnownHostsFile /dev/null\n"
        f"    StrictHostKeyChecking yes\n    IdentityAgent none\n    LogLevel ERROR\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = folder / "sshd.log"
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(sshd_config)], stdout=subprocess.DEVNULL,
                            stderr=log.open("w"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError(f"sshd did not listen on {port}: {log.read_text()[-2000:]}")
    return Server(proc, port, config, folder, log)
