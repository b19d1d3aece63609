"""Text to the phoneme ids a Piper voice expects: espeak-ng IPA through ctypes, offline.

Piper voices are trained on espeak-ng's IPA phonemes (one id per Unicode code point after NFD
decomposition, a pad id between phonemes, ``^`` and ``$`` around the utterance, punctuation kept
as phonemes). The library comes from the ``espeakng-loader`` wheel (libespeak-ng and its data, so
``pip install espeakng-loader`` is the whole set-up), or from a system libespeak-ng
(``apt-get install espeak-ng``). espeak-ng is GPL-3.0: it is an optional installed dependency,
loaded at run time, never copied into polysteer.

espeak's ``espeak_TextToPhonemes`` drops clause punctuation, which the voices were trained with,
so the text is split into clauses at ``. , ; : ! ?`` first and each clause's punctuation is
appended to its phonemes. Raw phoneme strings (:func:`phonemes_to_ids`) and id lists skip espeak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence

from polysteer.errors import MissingDependencyError

ESPEAK_FIX = ("pip install espeakng-loader (ships libespeak-ng and its data; GPL-3.0), or "
              "apt-get install espeak-ng; or pass phonemes instead of text")
_CLAUSE = re.compile(r"([^.,;:!?]*)([.,;:!?]+|$)")
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_lock = threading.Lock()
_state: dict[str, object] = {}


def espeak_library() -> tuple[str, str | None]:
    """``(library path, data path or None)``: espeakng-loader's wheel first, then the system's."""
    if importlib.util.find_spec("espeakng_loader") is not None:
        import espeakng_loader

        return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()
    found = ctypes.util.find_library("espeak-ng")
    if found:
        return found, None
    raise MissingDependencyError(f"phonemising text needs espeak-ng: {ESPEAK_FIX}")


def _espeak(voice: str) -> ctypes.CDLL:
    """The loaded library, initialised once per process, set to ``voice``."""
    lib = _state.get("lib")
    if lib is None:
        path, data = espeak_library()
        lib = ctypes.CDLL(path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int]
        if lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode() if data else None, 0) < 0:
            raise MissingDependencyError(f"espeak-ng at {path} failed to initialise (data: {data}); "
                                         f"{ESPEAK_FIX}")
        _state["lib"] = lib
    if _state.get("voice") != voice:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        _state["voice"] = voice
    return lib


def _clause_phonemes(lib: ctypes.CDLL, text: str) -> str:
    buffer = ctypes.create_string_buffer(text.encode("utf-8"))
    pointer = ctypes.c_void_p(ctypes.addressof(buffer))
    parts = []
    while pointer.value:
        out = lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
        if out:
            parts.append(out.decode("utf-8").strip())
    return " ".join(p for p in parts if p)


def phonemize(text: str, voice: str = "en-us") -> str:
    """espeak-ng IPA phonemes of ``text`` with clause punctuation kept (``"həlˈoʊ, wˈɜːld!"``)."""
    out = []
    with _lock:
        lib = _espeak(voice)
        for words, punctuation in _CLAUSE.findall(text):
            phonemes = _clause_phonemes(lib, words) if words.strip() else ""
            mark = punctuation[:1]
            if phonemes or mark:
                out.append(phonemes + mark)
    return " ".join(out).strip()


def phonemes_to_ids(phonemes: str, id_map: Mapping[str, Sequence[int]]) -> list[int]:
    """Ids for a phoneme string: ``^ _ p1 _ p2 _ ... $`` (``_`` is the pad); unknown symbols are
    skipped. Code points are taken after NFD decomposition, as the voices were trained."""
    pad = list(id_map.get("_", [0]))
    ids = list(id_map.get("^", [1])) + pad
    for symbol in unicodedata.normalize("NFD", phonemes):
        if symbol in id_map:
            ids += list(id_map[symbol]) + pad
    return ids + list(id_map.get("$", [2]))


def unknown_symbols(phonemes: str, id_map: Mapping[str, Sequence[int]]) -> list[str]:
    """Symbols of ``phonemes`` that the voice has no id for (they are skipped)."""
    return sorted({s for s in unicodedata.normalize("NFD", phonemes) if s not in id_map})
