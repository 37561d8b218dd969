"""``bench --on`` and ``predict --on``: push what is missing, run the device's own ``mobilenet-edge`` there, bring
its JSON back. Hosts run in parallel (one thread each: the work is on the devices); a host that is down,
refuses the key, lacks mobilenet-edge or fails mid-run costs only its own results."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ...core.errors import MobilenetEdgeError
from . import transport
from .hosts import Remote, shell_join
from .push import VERIFY_TIMEOUT_S, check_local, push_bundle
from .transport import RemoteError

#: seconds a remote bench may run before its host counts as failed
BENCH_TIMEOUT_S = 6 * 3600

#: ``step(host_name, text, done)``: a host's progress (``done`` True on its last call)
Step = Callable[[str, str, bool], None]


def _json_doc(remote: Remote, p, what: str):
    try:
        return json.loads(p.stdout)
    except ValueError:
        raise RemoteError(f"{remote.name}: {what} gave no JSON: {transport.last_line(p.stderr) or f'exit {p.returncode}'}") from None


def bench_one(remote: Remote, bundles: Sequence[Path], *, bench_args: Sequence[str], remote_cmd: str | None = None,
              transfer: str = "auto", config: str | None = None, step: Callable[[str], None] | None = None) -> dict:
    """Push ``bundles`` (checked here already) to one device and run its ``bench PATHS... BENCH_ARGS --json -``.

    Returns:
        the device's bench document ``{"environment", "results", "failures"}`` plus ``"host"`` and
        ``"pushed"`` (one :func:`push_bundle` result per bundle, without the verify reports).
    Raises:
        RemoteError: connection, copy, verify or the bench itself failed.
    """
    step = step or (lambda _t: None)
    pushed, cmd = [], remote_cmd
    for b in bundles:
        res = push_bundle(b, remote, remote_cmd=cmd, transfer=transfer, config=config, step=step, checked=True)
        pushed.append({k: v for k, v in res.items() if k != "verify"})
        cmd = res["remote_cmd"]  # found once
    step("bench")
    paths = [r["path"] for r in pushed]
    p = transport.run(remote, f"{cmd} bench {shell_join(paths)} {shell_join(list(bench_args))} --json -",
                      check=False, timeout=BENCH_TIMEOUT_S, config=config)
    doc = _json_doc(remote, p, "bench")
    if not isinstance(doc, dict) or not isinstance(doc.get("environment"), dict) or not isinstance(doc.get("results"), list):
        raise RemoteError(f"{remote.name}: bench answered something else than a result document")
    if p.returncode != 0 and not doc["results"]:
        raise RemoteError(f"{remote.name}: bench failed: {transport.last_line(p.stderr)}")
    return {"host": remote.name, **doc, "pushed": pushed}


def bench_on(remotes: Sequence[Remote], bundles: Sequence[Path], *, bench_args: Sequence[str],
             remote_cmd: str | None = None, transfer: str = "auto", config: str | None = None,
             step: Step | None = None) -> tuple[list[dict], list[dict]]:
    """:func:`bench_one` on every host at once.

    Every bundle is checked here first (a bundle that fails verify stops everything before any copy).

    Returns:
        ``(docs, failures)``: one bench document per host that answered (in ``remotes`` order) and
        ``[{"host", "error"}]`` for the others.
    Raises:
        MobilenetEdgeError / UsageError: a bundle fails its local check.
    """
    for b in bundles:
        check_local(b)
    step = step or (lambda _h, _t, _d: None)

    def one(remote: Remote):
        try:
            doc = bench_one(remote, bundles, bench_args=bench_args, remote_cmd=remote_cmd, transfer=transfer,
                            config=config, step=lambda text: step(remote.name, text, False))
        except MobilenetEdgeError as e:  # UsageError too (DIR is a file on that host): only this host fails
            step(remote.name, "FAILED", True)
            return None, {"host": remote.name, "error": str(e).replace("\n", " ")}
        step(remote.name, f"done: {len(doc['results'])} results", True)
        return doc, None

    with ThreadPoolExecutor(max_workers=max(1, len(remotes))) as pool:
        outcomes = list(pool.map(one, remotes))
    return [d for d, _ in outcomes if d is not None], [f for _, f in outcomes if f is not None]


def predict_on(remote: Remote, bundle: Path, images: Sequence[Path], *, predict_args: Sequence[str],
               remote_cmd: str | None = None, transfer: str = "auto", config: str | None = None,
               step: Callable[[str], None] | None = None) -> list[dict]:
    """Push ``bundle``, copy ``images`` into a temporary folder on the device, run its ``predict ... --json``.

    Returns:
        the device's predictions (``[{"image", "random_weights", "top_k": [...]}]``) with ``image`` set
        back to the local path and ``"host"`` added.
    Raises:
        RemoteError: as :func:`bench_one`; also when the images cannot be copied.
    """
    step = step or (lambda _t: None)
    res = push_bundle(bundle, remote, remote_cmd=remote_cmd, transfer=transfer, config=config, step=step)
    cmd = res["remote_cmd"]
    tmp = transport.run(remote, "mktemp -d", config=config).stdout.strip()
    names = {f"{i:05d}_{p.name}": p for i, p in enumerate(images)}
    try:
        step(f"copy {len(images)} image(s)")
        with _linked(names) as folder:
            transport.send_files(sorted(folder.iterdir()), remote, tmp + "/", config=config)
        step("predict")
        remote_paths = [f"{tmp}/{n}" for n in names]
        p = transport.run(remote, f"{cmd} predict {shell_join([res['path'], *remote_paths])} "
                          f"{shell_join(list(predict_args))} --json", check=False, timeout=VERIFY_TIMEOUT_S, config=config)
        preds = _json_doc(remote, p, "predict")
    finally:
        transport.run(remote, ["rm", "-rf", "--", tmp], check=False, config=config)
    back = {f"{tmp}/{n}": str(p) for n, p in names.items()}
    out = [{**r, "image": back.get(r.get("image"), r.get("image")), "host": remote.name} for r in preds]
    if p.returncode != 0:
        raise RemoteError(f"{remote.name}: predict failed: {transport.last_line(p.stderr)}")
    return out


class _linked:
    """A temporary local folder holding ``{name: path}`` as symlinks (scp -r / rsync -L copy their targets)."""

    def __init__(self, names: dict):
        self.names = names

    def __enter__(self) -> Path:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="mobilenet-edge-images-")
        folder = Path(self._tmp.name)
        for n, p in self.names.items():
            (folder / n).symlink_to(Path(p).resolve())
        return folder

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()
