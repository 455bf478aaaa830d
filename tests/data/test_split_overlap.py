"""Train and val resolving to the same images (a masks-only VOC folder without ImageSets/, both
splits on it) stop the run with one line naming the count and the fix, unless allowed."""

from __future__ import annotations

import logging

import pytest
from test_voc_instances import CLASSES, masks_only_folder

from maskrcnn.data.voc import VOCDetection
from maskrcnn.engine.split_overlap import SplitOverlapError, check_split_overlap
from maskrcnn.engine.user_errors import user_error_message


def _split(root, split):
    return VOCDetection(sets=[(str(root), split)], class_names=CLASSES, with_masks=True)


def test_masks_only_folder_without_imagesets_gives_both_splits_every_image(tmp_path, caplog):
    masks_only_folder(tmp_path)  # images a and b annotated (c has no PNGs)
    train, val = _split(tmp_path, "train"), _split(tmp_path, "val")
    with pytest.raises(SplitOverlapError) as info:
        check_split_overlap(train, val, allowed=False)
    line = user_error_message(info.value)  # what tools/train.py prints after "error: "
    assert line is not None and "\n" not in line
    assert line.startswith("dataset.train and dataset.val share 2 images (2 of 2 train, 2 val; e.g. ")
    assert "give split files (ImageSets/Main/train.txt and val.txt) or a separate val folder" in line
    assert line.endswith("or set trainer.allow_split_overlap=true to run anyway")

    with caplog.at_level(logging.WARNING):
        assert check_split_overlap(train, val, allowed=True) == 2
    assert "share 2 images" in caplog.text and "allowed by trainer.allow_split_overlap=true" in caplog.text


def test_split_files_that_do_not_overlap_pass(tmp_path):
    masks_only_folder(tmp_path)
    (tmp_path / "ImageSets" / "Segmentation").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n")
    (tmp_path / "ImageSets" / "Segmentation" / "val.txt").write_text("b\n")
    assert check_split_overlap(_split(tmp_path, "train"), _split(tmp_path, "val"), allowed=False) == 0
