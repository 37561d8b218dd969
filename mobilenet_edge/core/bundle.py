"""Bundle folders (``export/<name>/``) and their ``manifest.json``; atomic file writes (stdlib and core only).

A bundle holds::

    model.onnx          fp32, simplified         (FILE_FP32)
    model.int8.onnx     QDQ int8                 (FILE_INT8)
    model.tflite        fp32 (optional)          (FILE_TFLITE)
    model.int8.tflite   int8 (optional)          (FILE_TFLITE_INT8)
    labels.txt          one label per output index
    manifest.json       variant, weights, preprocessing, labels, files (sha256, size), parity, quantization

Every artifact is written to a temporary file in the same folder and renamed, so nothing
half-written survives a crash; a bundle folder is replaced only after its successor is complete, and
never by a second run that started before it existed unless that run has ``force`` (the final rename
refuses an existing folder).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import jsonio
from .errors import MobilenetEdgeError, UsageError
from .manifest import FORMAT, FORMAT_VERSION, LABELS, MANIFEST, Manifest  # noqa: F401  (bundle constants)

FILE_FP32 = "model.onnx"
FILE_INT8 = "model.int8.onnx"
FILE_TFLITE = "model.tflite"
FILE_TFLITE_INT8 = "model.int8.tflite"


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


#: sha256 of the files checked in this process, keyed by (real path, size, mtime_ns, inode): a bundle opened
#: twice (e.g. ``bench --eval``) is hashed once. Only in-process: a cache on disk keyed by mtime would miss
#: what this check is for (bits that rot on an SD card leave size and mtime alone).
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def cached_sha256(path: str | Path) -> str:
    """:func:`sha256_file`, remembered for this process while the file's size, mtime and inode stay the same."""
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def file_mismatch(path: str | Path, rec: dict, *, cached: bool = False) -> tuple[int, str, str | None]:
    """Compare a file with its manifest ``files`` record: (size in bytes, sha256 hex, why it differs or None).

    The reason is ``"size S bytes, manifest says M"`` or ``"sha256 0123456789ab... differs from the
    manifest's ..."``. ``cached``: through :func:`cached_sha256`.
    """
    size = os.stat(path).st_size
    digest = cached_sha256(path) if cached else sha256_file(path)
    if size != rec.get("size"):
        return size, digest, f"size {size} bytes, manifest says {rec.get('size')}"
    if digest != rec.get("sha256"):
        return size, digest, f"sha256 {digest[:12]}... differs from the manifest's {str(rec.get('sha256'))[:12]}..."
    return size, digest, None


def check_bundle_file(bundle: str | Path, name: str, manifest: Manifest) -> Path:
    """Refuse a bundle file that is not the one its manifest records (size, then sha256; issue #20).

    Every model opened from a bundle goes through this (``runtime/load.open_model``, ``bench``,
    ``quantize``) unless the user passes ``--no-verify``. Cost: one sha256 pass over the file per process
    (:func:`cached_sha256`; figures in docs/bundle-format.md).

    Returns:
        ``bundle/name``.
    Raises:
        MobilenetEdgeError: one line naming the file: not listed in manifest.json, or its size or sha256
            differs (a copy cut short, a flipped byte, a file replaced by hand).
    """
    path = Path(bundle) / name
    hint = f"`mobilenet-edge verify {bundle}` checks every file; --no-verify runs it anyway"
    rec = manifest.file(name)
    if not rec.get("sha256"):
        raise MobilenetEdgeError(f"{path} is not listed in {MANIFEST} with a sha256 ({hint})")
    _, _, why = file_mismatch(path, rec, cached=True)
    if why:
        raise MobilenetEdgeError(f"{path} does not match {MANIFEST} ({why}): changed or corrupt since export; {hint}")
    return path


def check_listed_file(path: str | Path) -> None:
    """A model file given by its path that sits in a bundle folder whose manifest lists it (e.g.
    ``export/<name>/model.int8.onnx``) is checked as :func:`check_bundle_file` checks it; a file without
    such a record (a lone file, or a folder without a readable manifest) is not.

    Raises:
        MobilenetEdgeError: as :func:`check_bundle_file`.
    """
    path = Path(path)
    if not (path.parent / MANIFEST).is_file():
        return
    try:
        manifest = Manifest.read(path.parent)
    except MobilenetEdgeError:
        return
    if manifest.file(path.name):
        check_bundle_file(path.parent, path.name, manifest)


def file_record(path: str | Path) -> dict:
    """``{"sha256": hex, "size": bytes}`` for a file."""
    path = Path(path)
    return {"sha256": sha256_file(path), "size": path.stat().st_size}


@contextlib.contextmanager
def atomic_path(dst: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``dst``; on success it is renamed onto ``dst``, on error removed.

    The temp name keeps ``dst``'s suffixes (``.tmp-XXXX.onnx``) so tools that look at the suffix work.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.tmp-", suffix=dst.suffix, dir=dst.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with disk_errors(dst):
            yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp_path, dst)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: errno values of a full or read-only disk: the message names the file being written
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


class DiskError(MobilenetEdgeError):
    """A full (or read-only) disk while writing ``path``; ``reason`` is the OS's words. Exit code 1."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot write {path}: {reason} (nothing was replaced)")


@contextlib.contextmanager
def disk_errors(dst: str | Path, *, stage: Path | None = None) -> Iterator[None]:
    """Turn a full (or read-only) disk while writing ``dst`` into one line that names it.

    OSError for a failed ``write()`` carries no file name ("[Errno 28] No space left on device"). With
    ``stage`` (the temp folder that becomes ``dst``), a file inside it is named by its final path.

    Raises:
        DiskError: ``"cannot write {dst}: No space left on device (nothing was replaced)"``.
    """
    try:
        yield
    except DiskError as e:
        if stage is not None and e.path.is_relative_to(stage):
            raise DiskError(Path(dst) / e.path.relative_to(stage), e.reason) from None
        raise
    except OSError as e:
        if e.errno not in DISK_ERRNOS:
            raise
        raise DiskError(Path(dst), e.strerror or str(e)) from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(dst: str | Path, data: bytes) -> None:
    with atomic_path(dst) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dst: str | Path, text: str) -> None:
    write_bytes_atomic(dst, text.encode("utf-8"))


def write_json_atomic(dst: str | Path, obj) -> None:
    write_text_atomic(dst, jsonio.dumps(obj, indent=2) + "\n")


def check_writable_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check it is a writable folder. Raises UsageError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {path} is not writable: {e.strerror or e}") from None
    if not path.is_dir():
        raise UsageError(f"--out {path} is not a folder")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path} is not writable")
    return path


def check_can_write(path: str | Path, option: str, *, folder: bool = False, force: bool | None = None) -> Path:
    """Check, before any work and without creating anything, that ``path`` can be written.

    ``path`` is a file written with :func:`atomic_path` (or, with ``folder=True``, a folder that will
    be created if needed): the nearest existing folder on its way (missing folders are created at write
    time) must be a writable folder. Same rule as :func:`check_writable_dir` for ``export --out``.
    ``force=False``: a results file must not exist yet (issue #20: nothing is overwritten without
    ``--force``); None: an existing file may be replaced.

    Raises:
        UsageError: ``"{option} {path}: folder {f} is not writable"``, ``"... {f} is not a folder"``,
            (a file) ``"{option} {path} is a folder; give a file name"``, or (``force=False``)
            ``"{option} {path} exists; use --force to replace it"``.
    """
    path = Path(path)
    if force is False and not folder and (path.is_file() or path.is_symlink()):
        raise UsageError(f"{option} {path} exists; use --force to replace it")
    if folder:
        if path.exists() and not path.is_dir():
            raise UsageError(f"{option} {path} is not a folder")
        parent = path
    else:
        if path.is_dir():
            raise UsageError(f"{option} {path} is a folder; give a file name")
        parent = path.parent
    while not parent.exists() and parent != parent.parent and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: folder {parent} is not writable")
    return path


@contextlib.contextmanager
def staged_dir(dst: str | Path, *, force: bool = False, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Build a folder in a temporary sibling, then put it in place of ``dst``.

    Args:
        dst: final folder.
        force: replace an existing ``dst`` (only after the new one is complete). Without it an
            existing ``dst`` raises UsageError before any work is done.
        keep: names of files to copy from an existing ``dst`` into the staging folder first.
    Yields:
        The staging folder. If the body raises, the staging folder is removed and ``dst`` is untouched.
    """
    dst = Path(dst)
    if dst.exists() and not force:
        raise UsageError(f"{dst} exists; use --force to replace it")
    created_parent = not dst.parent.exists()
    parent = check_writable_dir(dst.parent)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=parent))
    try:
        with disk_errors(dst, stage=stage):
            for name in keep:
                if (dst / name).is_file():
                    shutil.copy2(dst / name, stage / name)
            yield stage
        os.chmod(stage, 0o755)
        _put_in_place(stage, dst, parent, force=force)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        if created_parent and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # a failed first export leaves no empty --out folder behind


def _put_in_place(stage: Path, dst: Path, parent: Path, *, force: bool) -> None:
    """Rename the complete ``stage`` folder to ``dst``, never silently over a ``dst`` that appeared meanwhile.

    ``os.rename`` of a folder refuses a non-empty target (POSIX rename(2): ENOTEMPTY / EEXIST; Windows: any
    existing target), so of two runs writing the same ``dst`` at once the second learns it here, after
    the check at the start passed for both (issue #20 item 6). Without ``force`` that is
    UsageError "exists"; with ``force`` the existing folder is moved aside, the new one renamed in, the
    old one removed (retried if another ``force`` run swaps in between).
    """
    for _ in range(3):
        try:
            os.rename(stage, dst)
            return
        except OSError:
            if not (dst.exists() or dst.is_symlink()):
                raise
            if not force:
                raise UsageError(f"{dst} exists (another run wrote it meanwhile); use --force to replace it") from None
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=parent))
        try:
            os.rename(dst, old / dst.name)
        except FileNotFoundError:  # another --force run moved it first
            pass
        try:
            os.rename(stage, dst)
            return
        except OSError:
            if not dst.exists():
                raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    raise UsageError(f"{dst} keeps being replaced by other runs; try again")


def read_manifest(bundle: str | Path) -> dict:
    """``bundle/manifest.json`` as a JSON dict, through the one reader (:meth:`.manifest.Manifest.read`).

    Raises:
        MobilenetEdgeError: missing, unreadable, or not our format.
    """
    return Manifest.read(bundle).to_dict()


def write_manifest(bundle: str | Path, manifest: dict | Manifest) -> None:
    """Write a manifest (a :class:`~.manifest.Manifest` or its dict) atomically, through the one writer."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest, check=False)  # a writer: whatever the caller built
    manifest.write(bundle)


def model_file(bundle: str | Path, *, int8: bool = False, fmt: str = "onnx") -> Path:
    """Path of a model inside a bundle folder. Raises MobilenetEdgeError if it is absent."""
    name = {
        ("onnx", False): FILE_FP32,
        ("onnx", True): FILE_INT8,
        ("tflite", False): FILE_TFLITE,
        ("tflite", True): FILE_TFLITE_INT8,
    }[(fmt, int8)]
    path = Path(bundle) / name
    if not path.is_file():
        hint = " (run `mobilenet-edge quantize` first)" if int8 else ""
        raise MobilenetEdgeError(f"{bundle} has no {name}{hint}")
    return path
