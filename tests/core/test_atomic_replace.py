"""Replacing a saved folder is atomic for concurrent readers, and a killed writer loses nothing.

Issue 19, reproduction 4: re-saving a dictionary while another process loaded it gave "not found"
(608 of 10,402 loads) or mixed the old JSON with the new tensors (74 of 4,616), and a crash between
the two renames left nothing at the name. Here real processes read while one writes, and writers
are SIGKILLed at random points.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from polysteer.features.dictionary import DictionaryInfo, DirectionSet, load_dictionary
from polysteer.io.fileio import clean_debris, read_folder, staged_folder

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and fork are POSIX")

D_IN = 64


def _version(n: int) -> DirectionSet:
    """Version ``n``: its labels, scales and directions all say ``n`` (and its size varies)."""
    d_features = 1 + n % 7
    info = DictionaryInfo(model=None, site="blocks.0.resid_post", site_norm=float(n + 1),
                          method="test", details={"version": n})
    directions = torch.full((d_features, D_IN), float(n + 1))
    return DirectionSet(directions, info, [f"v{n}"] * d_features, torch.full((d_features,), float(n)))


def _check(d: DirectionSet) -> int:
    """The version a loaded dictionary is, asserting that all of its parts agree."""
    n = int(d.labels[0][1:])
    assert d.info.details["version"] == n and d.info.site_norm == n + 1
    assert d.scales.tolist() == [float(n)] * d.d_features, "JSON of one version, tensors of another"
    assert d.d_features == 1 + n % 7
    return n


def _writer(target: str, start: int, stop_after: int | None) -> None:
    n = start
    while stop_after is None or n < start + stop_after:
        _version(n).save(target)
        n += 1


def _reader(target: str, seconds: float, out: mp.Queue) -> None:
    loads, errors, seen = 0, [], set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            seen.add(_check(load_dictionary(target)))
            loads += 1
        except Exception as err:  # counted and reported, never hidden
            errors.append(f"{type(err).__name__}: {err}")
    out.put((loads, errors[:5], len(errors), len(seen)))


def test_readers_see_old_or_new_version_whole_while_a_writer_replaces_it(tmp_path):
    target = tmp_path / "dict"
    _version(0).save(target)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(target), 1, None))
    readers = [ctx.Process(target=_reader, args=(str(target), 4.0, out)) for _ in range(3)]
    writer.start()
    for r in readers:
        r.start()
    results = [out.get(timeout=120) for _ in readers]
    for r in readers:
        r.join()
    writer.kill()
    writer.join()
    loads = sum(r[0] for r in results)
    failures = sum(r[2] for r in results)
    assert failures == 0, [r[1] for r in results]
    assert loads > 20 and max(r[3] for r in results) > 2, "readers saw several versions"
    _check(load_dictionary(target))


@pytest.mark.parametrize("round_", range(3))
def test_a_writer_killed_at_any_point_leaves_a_whole_version_and_its_debris_is_cleaned(
        tmp_path, round_):
    target = tmp_path / "dict"
    rng = random.Random(round_)
    ctx = mp.get_context("fork")
    expected = 0
    _version(0).save(target)
    for kill in range(8):
        start = 1000 * (kill + 1)
        writer = ctx.Process(target=_writer, args=(str(target), start, None))
        writer.start()
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        n = _check(load_dictionary(target))  # never nothing, never a mix
        assert n == expected or start <= n, n
        expected = n
    # the next save of that folder removes what the killed writers left beside it
    _version(1).save(target)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["dict", os.readlink(target)]), names
    assert _check(load_dictionary(target)) == 1


def test_a_swap_killed_between_its_renames_is_put_back(tmp_path):
    """The fallback swap (no symlinks) moves the old folder aside: a kill there is repaired."""
    target = tmp_path / "dict"
    _version(3).save(target)
    aside = tmp_path / ".dict.999999999-dead.tmp"  # a dead writer's aside folder
    aside.mkdir()
    os.replace(target, aside / "dict")
    assert not target.exists()
    removed = clean_debris(target)
    assert removed == [aside] and _check(load_dictionary(target)) == 3


def test_stale_staging_folders_of_dead_processes_are_cleaned_on_the_next_write(tmp_path):
    target = tmp_path / "model"
    dead = tmp_path / ".model.999999999-abcd.tmp"  # pid that cannot exist
    dead.mkdir()
    (dead / "half.bin").write_bytes(b"x")
    alive = tmp_path / f".model.{os.getpid()}-abcd.tmp"  # this process: work in progress
    alive.mkdir()
    other = tmp_path / ".other.999999999-abcd.tmp"  # another folder's: not ours to judge
    other.mkdir()
    old_style = tmp_path / ".model.k2j4x9.tmp"  # an earlier polysteer's name, no pid
    old_style.mkdir()
    recent = tmp_path / ".model.a8b8c8.tmp"
    recent.mkdir()
    long_ago = time.time() - 3 * 24 * 3600
    os.utime(old_style, (long_ago, long_ago))
    with staged_folder(target) as tmp:
        (tmp / "weights").write_text("w")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["model", alive.name, other.name, recent.name])


def test_read_folder_retries_only_when_the_version_moved(tmp_path):
    target = tmp_path / "d"
    _version(1).save(target)
    _version(2).save(target)  # now a link
    calls = []

    def load(real: Path):
        calls.append(real)
        if len(calls) == 1:
            _version(3).save(target)  # the version being read is replaced and removed
            raise FileNotFoundError(real)
        return _check(load_dictionary(real))

    assert read_folder(target, load) == 3 and len(calls) == 2
    with pytest.raises(FileNotFoundError):
        read_folder(tmp_path / "missing", lambda real: load_dictionary(real))


@pytest.mark.parametrize("fails", [False, True])
def test_a_load_that_saw_a_plain_folder_replaced_is_read_again(tmp_path, fails):
    """The first replace swaps a plain folder for a link and removes it: a load in between may
    read half of each version (CI saw "1 labels for 2 features"), so it is retried."""
    target = tmp_path / "d"
    _version(1).save(target)
    assert not target.is_symlink()
    calls = []

    def load(real: Path):
        calls.append(real)
        if len(calls) == 1:
            _version(2).save(target)  # mid-load: the plain folder becomes a link, its files go
            if fails:
                raise FileNotFoundError(real / "tensors.safetensors")
            return "half of version 1, half of version 2"
        return _check(load_dictionary(real))

    assert read_folder(target, load) == 2 and len(calls) == 2


def test_a_cached_dictionary_is_read_again_once_replaced_and_keeps_its_name(tmp_path, plugin_manager):
    from polysteer.features.dictionary import resolve_dictionary

    _version(1).save(tmp_path / "d")
    assert _check(resolve_dictionary("d", tmp_path)) == 1
    _version(2).save(tmp_path / "d")  # now a link to a new version
    loaded = resolve_dictionary("d", tmp_path)
    assert _check(loaded) == 2 and loaded.source == tmp_path / "d"
    _version(3).save(tmp_path / "d")
    assert _check(resolve_dictionary("d", tmp_path)) == 3


# --- the fallback where symlinks or renameat2 are missing (Windows, macOS) -------------------------
# Simulated on Linux: os.symlink raising OSError (Windows without the symlink right), or _exchange
# answering False (no renameat2). Every replace then moves the old folder aside and the new one in
# (two renames, a short window without the name), and the name stays a plain folder.


@pytest.fixture(params=["no-symlinks", "no-renameat2"])
def fallback(request, monkeypatch):
    from polysteer.io import fileio

    if request.param == "no-symlinks":
        def no_symlink(*args, **kwargs):
            raise OSError(1, "symbolic links are not permitted here")

        monkeypatch.setattr(os, "symlink", no_symlink)
    else:
        monkeypatch.setattr(fileio, "_exchange", lambda a, b: False)
    return request.param


def test_fallback_readers_see_old_or_new_version_whole(tmp_path, fallback):
    target = tmp_path / "dict"
    _version(0).save(target)
    _version(1).save(target)
    assert not target.is_symlink(), "the fallback keeps a plain folder"
    ctx = mp.get_context("fork")  # the children inherit the simulated platform
    out = ctx.Queue()
    writer = ctx.Process(target=_writer, args=(str(target), 2, None))
    readers = [ctx.Process(target=_reader, args=(str(target), 3.0, out)) for _ in range(3)]
    writer.start()
    for r in readers:
        r.start()
    results = [out.get(timeout=120) for _ in readers]
    for r in readers:
        r.join()
    writer.kill()
    writer.join()
    failures = sum(r[2] for r in results)
    assert failures == 0, [r[1] for r in results]
    assert sum(r[0] for r in results) > 20 and max(r[3] for r in results) > 2, results
    assert not target.is_symlink()
    _check(load_dictionary(target))


def test_fallback_a_reader_waits_through_the_window_without_the_name(tmp_path, fallback, monkeypatch):
    """A load that starts after the old folder was moved aside, before the new one is moved in,
    waits and gets the new version (read_folder), not "not found"."""
    import threading

    target = tmp_path / "dict"
    _version(1).save(target)
    real_replace = os.replace
    gap = threading.Event()

    def slow_replace(src, dst):
        real_replace(src, dst)
        if Path(dst).name == "dict" and Path(dst).parent.name.endswith(".tmp"):
            gap.set()  # the old version is aside and "dict" is missing
            time.sleep(0.3)

    monkeypatch.setattr(os, "replace", slow_replace)
    writer = threading.Thread(target=lambda: _version(2).save(target))
    writer.start()
    assert gap.wait(10)
    assert not target.exists()
    assert _check(load_dictionary(target)) == 2
    writer.join()


@pytest.mark.parametrize("round_", range(2))
def test_fallback_a_writer_killed_at_any_point_leaves_a_loadable_version(tmp_path, fallback, round_):
    target = tmp_path / "dict"
    rng = random.Random(round_)
    ctx = mp.get_context("fork")
    _version(0).save(target)
    expected = 0
    for kill in range(8):
        start = 1000 * (kill + 1)
        writer = ctx.Process(target=_writer, args=(str(target), start, None))
        writer.start()
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        n = _check(load_dictionary(target))  # never nothing, never a mix
        assert n == expected or start <= n, n
        expected = n
    _version(1).save(target)  # the next save removes what the killed writers left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dict"]
    assert _check(load_dictionary(target)) == 1


def test_fallback_a_writer_killed_between_its_two_renames_leaves_the_old_version_loadable(tmp_path):
    """The deterministic case of the kill above: the old folder is aside under a dead writer's
    name and the name is missing. The next load puts it back (it does not wait for a write)."""
    target = tmp_path / "dict"
    _version(3).save(target)
    aside = tmp_path / ".dict.999999999-0badcafe.k2j4x9ab.tmp"  # a dead writer's aside folder
    aside.mkdir()
    os.replace(target, aside / "dict")
    staged = tmp_path / ".dict.v-999999999-0badcafe"  # the new version it never moved in
    _version(4).save(staged)
    assert not target.exists()
    assert _check(load_dictionary(target)) == 3
    assert target.is_dir() and not (aside / "dict").exists()
    _version(5).save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["dict", os.readlink(target)])
    assert _check(load_dictionary(target)) == 5
