"""Labels: a labels file, the ImageNet class names and synsets shipped with the package, the
background offset of Google's 1001-class models, and ground truth for labelled image folders.

Stdlib only (plus :mod:`.images` for what counts as an image file).
"""

from __future__ import annotations

from pathlib import Path

from .errors import MobilenetEdgeError, UsageError
from .images import is_image_path

_DATA = Path(__file__).with_name("data")


def background_offset(num_classes: int) -> int:
    """1 for 1001-class TF-slim models (index 0 = background, index i+1 = ImageNet class i), else 0.

    Source: Google's TF-slim MobileNet V1 checkpoints and ``.tflite`` files (1001 outputs).
    """
    return 1 if num_classes == 1001 else 0


def read_labels(path: str | Path) -> list[str]:
    """One label per line (blank trailing lines dropped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def check_labels(labels, *, source: str = "labels") -> tuple[str, ...]:
    """Validate class labels (one per output index): each a non-empty single line, no label twice.

    Args:
        labels: a sequence of strings (a bare string is refused: it would be one label per character).
        source: where they come from, for messages (e.g. the file name).
    Returns:
        the labels as a tuple of str, surrounding whitespace kept as given.
    Raises:
        MobilenetEdgeError: no label, an empty or blank label, a label with a line break, a duplicated label
            (first one named with both positions, 1-based lines).
    """
    if isinstance(labels, (str, bytes)):
        raise UsageError(f"{source}: labels must be a list of strings, got a single string")
    out = tuple(labels)
    if not out:
        raise MobilenetEdgeError(f"{source}: no labels")
    seen: dict[str, int] = {}
    for i, lab in enumerate(out, 1):
        if not isinstance(lab, str):
            raise UsageError(f"{source}: label {i} must be a string, got {type(lab).__name__}")
        if not lab.strip():
            raise MobilenetEdgeError(f"{source}: label {i} (line {i}) is empty; expected one non-empty label per line")
        if "\n" in lab or "\r" in lab:
            raise MobilenetEdgeError(f"{source}: label {i} contains a line break")
        if lab in seen:
            raise MobilenetEdgeError(f"{source}: label {lab!r} appears twice (lines {seen[lab]} and {i}); "
                                     "each class needs its own label")
        seen[lab] = i
    return out


def read_labels_file(path: str | Path) -> tuple[str, ...]:
    """A user's labels file (one label per line, UTF-8, blank trailing lines dropped), checked by
    :func:`check_labels`.

    Raises:
        UsageError: no such file, or a folder.
        MobilenetEdgeError: unreadable (not UTF-8), or labels that :func:`check_labels` refuses.
    """
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{p} is a folder, expected a labels file (one label per line)")
    if not p.is_file():
        raise UsageError(f"no such labels file: {p}")
    try:
        labels = read_labels(p)
    except (UnicodeDecodeError, OSError) as e:
        raise MobilenetEdgeError(f"cannot read labels file {p}: {e}") from None
    return check_labels(labels, source=p.name)


def imagenet_labels(num_classes: int = 1000) -> list[str]:
    """The ImageNet-1k class names shipped with the package (a public fact list).

    ``num_classes=1001`` prepends ``"background"`` (TF-slim checkpoints: index 0 is background).
    Other counts get ``class_<i>`` names.
    """
    path = _DATA / "imagenet_labels.txt"
    names = read_labels(path)
    if num_classes == 1000:
        return names
    if num_classes == 1001:
        return ["background"] + names
    return [f"class_{i}" for i in range(num_classes)]


def imagenet_synsets() -> list[str]:
    """The 1000 ImageNet-1k synset ids in the standard sorted order (index = position).

    Source: tensorflow/models research/slim/datasets/imagenet_lsvrc_2015_synsets.txt (Apache-2.0),
    shipped as ``mobilenet_edge/core/data/imagenet_synsets.txt``.
    """
    path = _DATA / "imagenet_synsets.txt"
    return path.read_text(encoding="utf-8").split()


def _is_synset(name: str) -> bool:
    return len(name) == 9 and name[0] == "n" and name[1:].isdigit()


def _is_index(name: str) -> bool:
    return name.isascii() and name.isdigit()


#: ``ground_truth`` descriptions (the ``ground_truth`` field of eval's output) for the folder rules
GT_SYNSET_FOLDERS = "synset folders (standard sorted synset order)"
GT_INDEX_FOLDERS = "index folders (folder name = ImageNet index)"
GT_POSITION_FOLDERS = "class folders (sorted position)"
GT_LABEL_FOLDERS = "class folders named by the model's labels"
GT_SYNSET_FILES = "nXXXXXXXX_ file names (standard sorted synset order)"


def _csv_file(csv_path: Path, row: dict, n: int, folder: Path) -> Path:
    name = (row.get("file") or "").strip()
    if not name:
        raise UsageError(f"{csv_path} line {n}: empty file name")
    rel = Path(name)
    if rel.is_absolute() or rel.drive or ".." in rel.parts:
        raise UsageError(f"{csv_path} line {n}: {name!r} is outside {folder} (paths must stay inside the folder)")
    return folder / rel


def ground_truth(folder: Path, labels_csv: Path | None, *, classes: int = 1000,
                 labels: list[str] | tuple[str, ...] | None = None) -> tuple[dict[Path, int], str]:
    """Map each labelled image under ``folder`` to its class index (0 .. ``classes`` - 1).

    Rules, first that applies: ``labels_csv`` or ``folder/labels.csv`` (columns ``file,imagenet_index``,
    UTF-8 with or without a BOM, paths relative to ``folder`` and inside it); class folders (torchvision's
    ImageFolder layout): all named ``nXXXXXXXX`` synsets -> the standard sorted synset order, all named by
    the model's ``labels`` -> that label's index, all named by integers -> the integer is the index,
    otherwise the folder's position in sorted order; files named ``nXXXXXXXX_*``. Some but not all folders
    named by labels is an error (a typo would silently shift classes). Each image counts once (by real
    path): a symlink to the folder itself or to one of its parents is skipped, a second link to a file is
    ignored.

    Args:
        folder: image folder.
        labels_csv: explicit CSV, or None for ``folder/labels.csv`` if present.
        classes: number of classes the model scores (1000 for ImageNet; a 1001-class model's background
            is not a class here). Every index must lie in ``0 .. classes - 1``.
        labels: the model's class names in index order (background excluded), or None.
    Returns:
        (mapping, source description: one of the ``GT_*`` strings or the CSV path).
    Raises:
        UsageError: unreadable CSV, missing columns, an index out of range, a path leaving ``folder``,
            no image in ``folder``, no labelled image, folders partly named by labels, a folder named
            by a label that occurs twice.
    """
    csv_path = labels_csv if labels_csv is not None else (folder / "labels.csv")
    if labels_csv is not None and labels_csv.is_dir():
        raise UsageError(f"{labels_csv} is a folder, expected a labels file (CSV with columns file,imagenet_index)")
    if labels_csv is not None and not labels_csv.is_file():
        raise UsageError(f"no such labels file: {labels_csv}")
    if csv_path.is_file():
        return _csv_truth(csv_path, folder, classes - 1), f"{csv_path}"
    subdirs = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and not _loops(d))
    if subdirs:
        return _folder_truth(folder, subdirs, classes, labels)
    return _file_name_truth(folder, classes - 1), GT_SYNSET_FILES


def _csv_truth(csv_path: Path, folder: Path, top: int) -> dict[Path, int]:
    """Rule 1: ``file,imagenet_index`` rows (UTF-8, with or without a BOM)."""
    import csv

    try:
        # utf-8-sig: Excel saves CSV with a byte-order mark, which would glue itself to "file"
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"cannot read {csv_path}: {e}") from None
    if not rows or not {"file", "imagenet_index"} <= set(rows[0]):
        raise UsageError(f"{csv_path} needs a header with columns file,imagenet_index")
    gt = {}
    for n, row in enumerate(rows, 2):
        path = _csv_file(csv_path, row, n, folder)
        try:
            idx = int(row["imagenet_index"])
        except (TypeError, ValueError):
            raise UsageError(f"{csv_path} line {n}: imagenet_index {row.get('imagenet_index')!r} is not an integer") from None
        if not 0 <= idx <= top:
            raise UsageError(f"{csv_path} line {n}: imagenet_index must be 0..{top}, got {idx}")
        gt[path] = idx
    return gt


def _loops(d: Path) -> bool:
    """True for a symlinked folder that points at its own parent or above (it would list every image again)."""
    if not d.is_symlink():
        return False
    real, parent = d.resolve(), d.parent.resolve()
    return real == parent or real in parent.parents


def _label_index(folder: Path, subdirs: list[Path], labels) -> dict[Path, int] | None:
    """Rule 2b: every sub-folder named by one of the model's labels -> its index; None when none is."""
    if not labels:
        return None
    index: dict[str, int] = {}
    for i, name in enumerate(labels):
        index.setdefault(name, i)
    named = [d for d in subdirs if d.name in index]
    if not named:
        return None
    if len(named) < len(subdirs):
        other = next(d for d in subdirs if d.name not in index)
        shown = ", ".join(list(labels)[:5]) + (", ..." if len(labels) > 5 else "")
        raise UsageError(f"{folder}: sub-folder {other.name!r} is none of the model's {len(labels)} labels ({shown}), "
                         f"while {len(named)} other sub-folder(s) are; rename or remove it")
    for d in named:
        dup = [i for i, name in enumerate(labels) if name == d.name]
        if len(dup) > 1:
            raise UsageError(f"{folder}: sub-folder {d.name!r} matches {len(dup)} of the model's labels "
                             f"(indices {', '.join(map(str, dup))}); give --labels labels.csv (file,imagenet_index)")
    return {d: index[d.name] for d in subdirs}


def _folder_truth(folder: Path, subdirs: list[Path], classes: int, labels=None) -> tuple[dict[Path, int], str]:
    """Rule 2: class folders (synsets, the model's labels, indices, or sorted position)."""
    top = classes - 1
    synsets = {s: i for i, s in enumerate(imagenet_synsets())}
    by_label = None if all(d.name in synsets for d in subdirs) else _label_index(folder, subdirs, labels)
    if by_label is None and all(d.name in synsets for d in subdirs):
        how, classes_of = GT_SYNSET_FOLDERS, {d: synsets[d.name] for d in subdirs}
    elif by_label is not None:
        how, classes_of = GT_LABEL_FOLDERS, by_label
    elif all(_is_index(d.name) for d in subdirs):
        how, classes_of = GT_INDEX_FOLDERS, {d: int(d.name) for d in subdirs}
    else:
        how, classes_of = GT_POSITION_FOLDERS, {d: pos for pos, d in enumerate(subdirs)}
    gt: dict[Path, int] = {}
    seen: set[Path] = set()
    for d in subdirs:
        files = _unique([f for f in sorted(d.rglob("*")) if f.is_file() and is_image_path(f)], seen)
        if files and not 0 <= classes_of[d] <= top:
            if how == GT_POSITION_FOLDERS:
                raise UsageError(f"{folder}: {len(subdirs)} class folders (sorted position = class) but "
                                 f"the model scores {classes} classes")
            raise UsageError(f"{d}: class folder names must be ImageNet indices 0..{top}")
        for f in files:
            gt[f] = classes_of[d]
    if not gt:
        raise UsageError(f"no images in the class folders of {folder}")
    return gt, how


def _file_name_truth(folder: Path, top: int) -> dict[Path, int]:
    """Rule 3: files named ``nXXXXXXXX_*`` (a synset, then anything)."""
    synsets = {s: i for i, s in enumerate(imagenet_synsets())}
    gt = {}
    any_image = False
    for f in _unique(sorted(folder.iterdir()), set()):
        if f.is_file() and is_image_path(f):
            any_image = True
            head = f.name.split("_", 1)[0]
            if _is_synset(head) and head in synsets:
                if synsets[head] > top:
                    raise UsageError(f"{f}: synset {head} is ImageNet index {synsets[head]}, "
                                     f"beyond the model's 0..{top}")
                gt[f] = synsets[head]
    if not any_image:
        raise UsageError(f"no images in {folder}")
    if not gt:
        raise UsageError(
            f"no ground truth for {folder}: give --labels labels.csv (file,imagenet_index), class folders, "
            "or files named nXXXXXXXX_*"
        )
    return gt


def _unique(paths: list[Path], seen: set[Path]) -> list[Path]:
    """``paths`` without those whose real path is in ``seen`` (updated): a symlinked image counts once."""
    out = []
    for p in paths:
        real = p.resolve()
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out
