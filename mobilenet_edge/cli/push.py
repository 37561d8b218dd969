"""``mobilenet-edge push`` and the ``--on HOST[,HOST...]`` side of ``bench`` and ``predict``: bundles to devices
over SSH, the devices' own verify / bench / predict, their JSON back (issue #19). The work is in
:mod:`mobilenet_edge.runtime.remote`; this module parses, draws progress and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..core import jsonio as _json
from ..core.errors import MobilenetEdgeError, UsageError
from .app import app, err, out

EPILOG = (
    "Examples:\n\n"
    "  mobilenet-edge push export/mobilenet_v1_0.50_160 pi@raspberrypi.local:bundles\n\n"
    "  mobilenet-edge push --install pi5     # a venv ~/mobilenet-edge with this package, no torch\n\n"
    "  mobilenet-edge push export/mobilenet_v1_0.50_160 ssh://pi@10.0.0.7:2222/home/pi/bundles --json\n\n"
    "  mobilenet-edge bench export/mobilenet_v1_0.50_160 --on pi4,pi5:bundles --threads 1,4 --json fleet.json\n\n"
    "HOST is anything ssh takes (user@host, an alias of ~/.ssh/config) or ssh://user@host:port; DIR (default: "
    "the login's home) is created when missing. Only changed files are copied (rsync when both ends have it, "
    "else scp), into DIR/.NAME.push, renamed onto DIR/NAME at the end: an interrupted push leaves the previous "
    "bundle intact. Exit 0 only when the device's own `mobilenet-edge verify` passes. ssh runs with BatchMode "
    "(no prompts) and a 10 s connect timeout; MOBILENET_EDGE_SSH_CONFIG names another ssh config file (ssh -F)."
)

RemoteCmdOpt = Annotated[Optional[str], typer.Option(
    "--remote-cmd", help="The device's mobilenet-edge, as its shell runs it (default: on its PATH, else "
    "~/mobilenet-edge/bin/mobilenet-edge).")]
TransferOpt = Annotated[str, typer.Option("--transfer", help="Copy with rsync, scp, or auto (rsync when both ends have it).")]


def _transfer(value: str) -> str:
    from ..runtime.remote.transport import TRANSFERS

    if value not in TRANSFERS:
        raise UsageError(f"--transfer must be one of {', '.join(TRANSFERS)}, got {value!r}")
    return value


@app.command(epilog=EPILOG)
def push(
    args: Annotated[list[str], typer.Argument(metavar="BUNDLE HOST[:DIR]", help="Bundle folder and where to put it "
                                              "(with --install, BUNDLE may be left out).", show_default=False)],
    install: Annotated[bool, typer.Option("--install", help="First build a wheel of this package and install it on "
                                          "the device in a venv (created if missing; idempotent).")] = False,
    venv: Annotated[str, typer.Option("--venv", help="--install: the venv on the device (relative to the home).")] = "mobilenet-edge",
    remote_cmd: RemoteCmdOpt = None,
    transfer: TransferOpt = "auto",
    bwlimit: Annotated[Optional[int], typer.Option("--bwlimit", min=1, help="Cap the copy at this many KiB/s.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Copy a bundle to a device over SSH (only what changed) and run the device's own verify there."""
    from ..runtime.remote import install as I
    from ..runtime.remote.hosts import parse_remote
    from ..runtime.remote.push import push_bundle

    if len(args) == 1 and install:
        bundle, host = None, args[0]
    elif len(args) == 2:
        bundle, host = Path(args[0]), args[1]
    else:
        raise UsageError("push needs BUNDLE HOST[:DIR] (or --install HOST[:DIR])")
    remote = parse_remote(host)
    transfer = _transfer(transfer)
    if bundle is not None and not bundle.is_dir():
        raise UsageError(f"push needs a bundle folder, got {bundle}")
    doc: dict = {}
    if install:
        say = (lambda m: err.print(m)) if as_json else (lambda m: out.print(m))
        doc["install"] = I.install(remote, venv=venv, say=say)
        remote_cmd = remote_cmd or doc["install"]["remote_cmd"]
    if bundle is not None:
        with _steps(remote.name) as step:
            res = push_bundle(bundle, remote, remote_cmd=remote_cmd, transfer=transfer, bwlimit=bwlimit, step=step)
        doc["push"] = res
        if not as_json:
            _print_push(res)
    if as_json:
        out.print_json(_json.dumps(doc))


def _print_push(res: dict) -> None:
    where = f"{res['host']}:{res['path']}"
    if res["changed"]:
        what = f"{len(res['copied'])} file(s), {res['bytes'] / 1e6:.2f} MB sent" + (
            f", {len(res['deleted'])} removed" if res["deleted"] else "")
        out.print(f"pushed {Path(res['bundle']).name} to {where} ({res['transfer']}: {what})")
    else:
        out.print(f"{where} is up to date (nothing copied)")
    rep = res["verify"]
    backends = sorted({f["backend"] for f in rep.get("files", []) if f.get("backend")})
    out.print(f"verify on {res['host']}: OK ({len(rep.get('files', []))} files; {', '.join(backends) or 'no model'})")


class _steps:
    """A one-line progress for one host (``step(text)``), on stderr."""

    def __init__(self, name: str):
        from ..core.progress import progress_bar

        self.name, self.prog = name, progress_bar(err, enabled=err.is_terminal)

    def __enter__(self):
        self.prog.__enter__()
        task = self.prog.add_task(self.name, total=None)
        return lambda text: self.prog.update(task, description=f"{self.name}: {text}")

    def __exit__(self, *exc):
        return self.prog.__exit__(*exc)


def parse_hosts(text: str) -> list:
    """``--on`` value: comma-separated HOST[:DIR] -> Remotes (UsageError on a bad one or a duplicate)."""
    from ..runtime.remote.hosts import parse_remote

    remotes = [parse_remote(h) for h in text.split(",") if h.strip()]
    if not remotes:
        raise UsageError(f"--on needs at least one host, got {text!r}")
    names = [r.spec for r in remotes]
    if len(set(names)) != len(names):
        raise UsageError(f"--on names a host twice: {text!r}")
    return remotes


def bench_on_hosts(models: list[Path], on: str, *, bench_args: list[str], remote_cmd: str | None, json_path,
                   csv_path) -> None:
    """``bench --on``: every host in parallel, one progress line each, one table with a column per device;
    a failed host is one line on stderr and exit code 1 at the end."""
    from ..core.progress import progress_bar
    from ..runtime import report as R
    from ..runtime.remote.fleet import bench_on

    remotes = parse_hosts(on)
    bundles = [Path(m) for m in models]
    for b in bundles:
        if not b.is_dir():
            raise UsageError(f"bench --on pushes bundles: {b} is not a bundle folder")
    with progress_bar(err, enabled=err.is_terminal) as prog:
        tasks = {r.name: prog.add_task(f"{r.name}: waiting", total=1) for r in remotes}

        def step(host: str, text: str, done: bool) -> None:
            prog.update(tasks[host], description=f"{host}: {text}", completed=1 if done else 0)
            if done and not err.is_terminal and text != "FAILED":  # logs: one line per host that finished
                err.print(f"{host}: {text}")

        docs, failures = bench_on(remotes, bundles, bench_args=bench_args, remote_cmd=remote_cmd, step=step)
    doc = R.fleet_document(docs, failures)
    rows = R.document_rows(doc)
    to_stdout = json_path is not None and str(json_path) == "-"
    console = err if to_stdout else out
    console.print(R.device_table(rows, title=f"p50 latency (ms) on {len(docs)} of {len(remotes)} host(s)"))
    for d in docs:
        for f in d.get("failures") or []:
            console.print(f"FAILED on {d['host']}: {f.get('model')} (threads {f.get('threads')}): {f.get('error')}",
                          style="red")
    for f in failures:  # one line per failed host, naming it
        msg = f["error"][len(f["host"]) + 2:] if f["error"].startswith(f["host"] + ": ") else f["error"]
        err.print(f"FAILED {f['host']}: {msg}", style="red")
    if json_path is not None:
        if to_stdout:
            print(_json.dumps(doc, indent=2))
        else:
            from ..core.bundle import write_json_atomic

            write_json_atomic(json_path, doc)
            err.print(f"wrote {json_path}")
    if csv_path is not None:
        R.write_csv(csv_path, rows, extra=("device",))
    if failures or any(d.get("failures") for d in docs):
        raise typer.Exit(1)


def predict_on_hosts(model: Path, images: list[str], on: str, *, predict_args: list[str], remote_cmd: str | None,
                     as_json: bool, show) -> None:
    """``predict --on``: the bundle pushed to each host, the images copied, the device's predictions printed
    per host (``show(results)`` draws them as the local predict does); exit 1 if a host failed."""
    from ..core.images import expand_paths
    from ..runtime.remote.fleet import predict_on

    remotes = parse_hosts(on)
    if not Path(model).is_dir():
        raise UsageError(f"predict --on pushes a bundle: {model} is not a bundle folder")
    paths = expand_paths(images)
    results, failed = [], []
    for r in remotes:
        with _steps(r.name) as step:
            try:
                res = predict_on(r, Path(model), paths, predict_args=predict_args, remote_cmd=remote_cmd, step=step)
            except MobilenetEdgeError as e:  # this host only; one line naming it
                failed.append(r.name)
                msg = str(e)[len(r.name) + 2:] if str(e).startswith(r.name + ": ") else str(e)
                err.print(f"FAILED {r.name}: {msg}", style="red")
                continue
        results += res
        if not as_json:
            out.print(f"{r.name}:", style="bold")
            show(res)
    if as_json:
        out.print_json(_json.dumps(results))
    if failed:
        raise typer.Exit(1)
