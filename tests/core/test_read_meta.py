"""``polysteer.io.read_meta``: the one check of a polysteer folder's metadata file (exists, JSON
object of the right format, a version this polysteer reads) that dictionary, classifier and
recogniser loaders share."""

from __future__ import annotations

import json

import pytest

from polysteer.errors import CorruptFileError
from polysteer.io import read_meta


def _write(folder, data) -> None:
    (folder / "thing.json").write_text(json.dumps(data))


def test_a_good_file_is_returned(tmp_path):
    _write(tmp_path, {"format": "polysteer-thing", "version": 2, "x": 1})
    assert read_meta(tmp_path, "thing.json", "polysteer-thing", 2, "fix it")["x"] == 1
    _write(tmp_path, {"format": "polysteer-thing"})  # no version: 1
    assert read_meta(tmp_path, "thing.json", "polysteer-thing", 1, "fix it") == {"format": "polysteer-thing"}


def test_a_missing_file_is_file_not_found_naming_the_folder_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"shown is not a polysteer thing folder \(no thing.json\); "
                                                r"make one"):
        read_meta(tmp_path, "thing.json", "polysteer-thing", 1, "make one", shown="shown",
                  what="polysteer thing")


@pytest.mark.parametrize("data,message", [
    ([1, 2], "is not a polysteer-thing"),
    ({"format": "other"}, "is not a polysteer-thing"),
    ({"format": "polysteer-thing", "version": "1"}, "version must be a positive integer"),
    ({"format": "polysteer-thing", "version": True}, "version must be a positive integer"),
    ({"format": "polysteer-thing", "version": 0}, "version must be a positive integer"),
    ({"format": "polysteer-thing", "version": 3}, "format version 3, this polysteer reads up to 2: upgrade"),
])
def test_a_wrong_file_is_a_corrupt_file_error(tmp_path, data, message):
    _write(tmp_path, data)
    with pytest.raises(CorruptFileError, match=message):
        read_meta(tmp_path, "thing.json", "polysteer-thing", 2, "fix it")


def test_the_loaders_share_it(tmp_path):
    """A dictionary and a classifier folder from a newer polysteer are refused alike."""
    from polysteer.features import load_classifier, load_dictionary

    for name, file, fmt in (("d", "dictionary.json", "polysteer-dictionary"),
                            ("c", "classifier.json", "polysteer-classifier")):
        (tmp_path / name).mkdir()
        (tmp_path / name / file).write_text(json.dumps({"format": fmt, "version": 99}))
    for load, name in ((load_dictionary, "d"), (load_classifier, "c")):
        with pytest.raises(CorruptFileError, match="format version 99.*upgrade polysteer"):
            load(tmp_path / name)
