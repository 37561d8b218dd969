"""Labels (issue #18 part 2) and the ground-truth rules of labelled folders (issue #20 item 5), torch-free.

The folders are built here; the expected class of each file is the one its folder was named after.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mobilenet_edge.core.errors import MobilenetEdgeError, UsageError
from mobilenet_edge.core.labels import (
    GT_LABEL_FOLDERS,
    GT_POSITION_FOLDERS,
    GT_SYNSET_FILES,
    check_labels,
    ground_truth,
    read_labels_file,
)

LABELS = ["daisy", "rose", "tulip"]


def _tree(root: Path, layout: dict[str, list[str]]) -> Path:
    for folder, files in layout.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            (root / folder / f).write_bytes(b"")  # ground_truth reads names only
    return root


def test_class_folders_named_by_the_model_labels_map_to_their_index(tmp_path):
    root = _tree(tmp_path / "val", {"tulip": ["a.jpg"], "daisy": ["b.jpg", "c.png"]})  # sorted order differs
    gt, rule = ground_truth(root, None, classes=3, labels=LABELS)
    assert rule == GT_LABEL_FOLDERS
    assert {p.relative_to(root).as_posix(): i for p, i in gt.items()} == {"tulip/a.jpg": 2, "daisy/b.jpg": 0,
                                                                         "daisy/c.png": 0}


def test_same_folders_without_labels_fall_back_to_position(tmp_path):
    root = _tree(tmp_path / "val", {"tulip": ["a.jpg"], "daisy": ["b.jpg"]})
    gt, rule = ground_truth(root, None, classes=3)
    assert rule == GT_POSITION_FOLDERS and gt[root / "daisy" / "b.jpg"] == 0 and gt[root / "tulip" / "a.jpg"] == 1


def test_a_folder_that_is_not_a_label_among_label_folders_is_named(tmp_path):
    root = _tree(tmp_path / "val", {"daisy": ["a.jpg"], "tulips": ["b.jpg"]})
    with pytest.raises(UsageError, match=r"sub-folder 'tulips' is none of the model's 3 labels \(daisy, rose, tulip\)"):
        ground_truth(root, None, classes=3, labels=LABELS)


def test_a_folder_matching_a_duplicated_label_is_refused(tmp_path):
    root = _tree(tmp_path / "val", {"crane": ["a.jpg"]})
    with pytest.raises(UsageError, match=r"'crane' matches 2 of the model's labels \(indices 1, 3\)"):
        ground_truth(root, None, classes=4, labels=["x", "crane", "y", "crane"])  # as ImageNet's two cranes


def test_symlink_to_its_own_folder_does_not_count_images_twice(tmp_path):
    root = _tree(tmp_path / "val", {"daisy": ["a.jpg"], "rose": ["b.jpg"]})
    os.symlink(root, root / "loop")
    os.symlink(root / "daisy" / "a.jpg", root / "rose" / "a_again.jpg")  # a second link to one image
    gt, rule = ground_truth(root, None, classes=3, labels=LABELS)
    assert rule == GT_LABEL_FOLDERS
    assert sorted(p.relative_to(root).as_posix() for p in gt) == ["daisy/a.jpg", "rose/b.jpg"]


def test_symlinked_file_names_count_once_in_the_synset_file_rule(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    (root / "n01440764_1.jpg").write_bytes(b"")
    os.symlink(root / "n01440764_1.jpg", root / "n01440764_2.jpg")
    gt, rule = ground_truth(root, None)
    assert rule == GT_SYNSET_FILES and list(gt) == [root / "n01440764_1.jpg"]


@pytest.mark.parametrize("labels, err, said", [
    ([], MobilenetEdgeError, "no labels"),
    (["a", " ", "c"], MobilenetEdgeError, "label 2 (line 2) is empty"),
    (["a", "b", "a"], MobilenetEdgeError, "label 'a' appears twice (lines 1 and 3)"),
    (["a", "b\nc"], MobilenetEdgeError, "label 2 contains a line break"),
    ("abc", UsageError, "got a single string"),
])
def test_check_labels_refuses_bad_lists(labels, err, said):
    with pytest.raises(err) as e:
        check_labels(labels, source="five.txt")
    assert said in str(e.value) and str(e.value).startswith("five.txt: ")
    assert not isinstance(e.value, UsageError) or err is UsageError  # bad content: exit 1, not 2


def test_read_labels_file(tmp_path):
    (tmp_path / "l.txt").write_text("daisy\nrose\ntulip\n\n", encoding="utf-8")
    assert read_labels_file(tmp_path / "l.txt") == ("daisy", "rose", "tulip")  # trailing blank lines dropped
    with pytest.raises(UsageError, match="no such labels file"):
        read_labels_file(tmp_path / "missing.txt")
    with pytest.raises(UsageError, match="is a folder"):
        read_labels_file(tmp_path)
