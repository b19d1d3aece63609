"""The preference store: versions, undo, decay, reset, restart, concurrency, corrupt files, styles, CLI.

Recognition is injected (a table from message to decisions), so these tests exercise the store
only; tests/text/test_smollm2_preferences.py runs the real recogniser on SmolLM2.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Sequence
from typing import Any

import pytest

from polysteer.cli import main
from polysteer.errors import ConfigError, CorruptFileError
from polysteer.preferences import (
    PreferenceError,
    PreferenceStore,
    Recognised,
    Recogniser,
)


class TableRecogniser:
    """Decisions looked up per message; every other message states nothing."""

    def __init__(self, table: dict[str, list[Recognised]]):
        self.table = table
        self.calls = 0

    def recognise(self, texts: Sequence[str], model: Any) -> list[list[Recognised]]:
        self.calls += 1
        return [list(self.table.get(t, [])) for t in texts]


TABLE = {
    "be brief": [Recognised("concise")],
    "be formal": [Recognised("formal")],
    "be brief and formal": [Recognised("concise"), Recognised("formal")],
    "you can be long again": [Recognised("concise", on=False)],
    "a bit briefer": [Recognised("concise", strength=0.5)],
}


def store(tmp_path, decay: int = 0, name: str = "prefs.sqlite") -> PreferenceStore:
    return PreferenceStore(tmp_path / name, TableRecogniser(TABLE), decay=decay)


def names(prefs) -> list[str]:
    return sorted(p.name for p in prefs)


def test_table_recogniser_meets_the_protocol():
    assert isinstance(TableRecogniser({}), Recogniser)


def test_observe_saves_a_new_version_and_counts_turns(tmp_path):
    s = store(tmp_path)
    assert s.observe("ann", "what is the capital of France?") == []
    assert s.history("ann") == [] and s.turn("ann") == 1
    got = s.observe("ann", "be brief")
    assert names(got) == ["concise"] and got[0].weight == 1.0 and got[0].stated_turn == 2
    s.observe("ann", "be formal")
    assert names(s.show("ann")) == ["concise", "formal"]
    assert [v.version for v in s.history("ann")] == [1, 2]
    assert [v.preferences for v in s.history("ann")] == [["concise"], ["concise", "formal"]]
    assert s.turn("ann") == 3
    assert s.show("bob") == [] and s.turn("bob") == 0  # per user


def test_a_statement_can_turn_a_preference_off(tmp_path):
    s = store(tmp_path)
    s.observe("ann", "be brief and formal")
    assert s.observe("ann", "you can be long again") == []
    assert names(s.show("ann")) == ["formal"]
    assert s.history("ann")[-1].detail.startswith("-concise")


def test_undo_goes_back_one_version_at_a_time(tmp_path):
    s = store(tmp_path)
    s.observe("ann", "be brief")
    s.observe("ann", "be formal")
    s.observe("ann", "you can be long again")
    assert names(s.show("ann")) == ["formal"]
    assert names(s.undo("ann")) == ["concise", "formal"]
    assert names(s.undo("ann")) == ["concise"]
    assert names(s.undo("ann")) == []
    with pytest.raises(PreferenceError, match="nothing|no preference change"):
        s.undo("ann")
    assert [v.undone for v in s.history("ann")] == [True, True, True]
    s.observe("ann", "be formal")  # a change after undo is a new version, numbered after the rest
    assert s.history("ann")[-1].version == 4 and names(s.show("ann")) == ["formal"]


def test_reset_forgets_and_undo_brings_back(tmp_path):
    s = store(tmp_path)
    s.observe("ann", "be brief and formal")
    s.reset("ann")
    assert s.show("ann") == [] and s.style_for("ann") == (None, [])
    assert names(s.undo("ann")) == ["concise", "formal"]
    s.forget("ann")
    assert s.show("ann") == [] and s.history("ann") == [] and s.turn("ann") == 0


def test_decay_fades_linearly_and_restating_renews(tmp_path):
    s = store(tmp_path, decay=4)
    s.observe("ann", "be brief")  # turn 1
    weights = []
    for _ in range(4):
        s.observe("ann", "tell me a joke")
        weights.append([p.weight for p in s.show("ann")])
    assert weights == [[0.75], [0.5], [0.25], []]
    s.observe("ann", "be brief")
    assert [p.weight for p in s.show("ann")] == [1.0]
    s.observe("ann", "a bit briefer")  # strength 0.5, restated now
    [p] = s.show("ann")
    assert (p.strength, p.weight, p.age) == (0.5, 0.5, 0)


def test_decay_zero_never_fades(tmp_path):
    s = store(tmp_path, decay=0)
    s.observe("ann", "be brief")
    for _ in range(50):
        s.observe("ann", "hello")
    assert [p.weight for p in s.show("ann")] == [1.0]
    assert s.show("ann")[0].age == 50


def test_bad_decay_and_user(tmp_path):
    with pytest.raises(ConfigError, match="decay"):
        PreferenceStore(tmp_path / "p.sqlite", decay=-1)
    with pytest.raises(PreferenceError, match="user id"):
        store(tmp_path).show("")


def test_survives_restart(tmp_path):
    s = store(tmp_path, decay=10)
    s.observe("ann", "be brief")
    s.observe("ann", "hello")
    del s
    again = PreferenceStore(tmp_path / "prefs.sqlite", TableRecogniser(TABLE), decay=10)
    [p] = again.show("ann")
    assert (p.name, p.age, p.weight) == ("concise", 1, 0.9)
    assert again.turn("ann") == 2 and len(again.history("ann")) == 1


def test_style_for_mixes_the_shipped_styles_with_decayed_weights(tmp_path):
    from polysteer.steering import load_style

    s = store(tmp_path, decay=4)
    s.observe("ann", "be brief and formal")
    s.observe("ann", "hello")  # age 1: weight 0.75
    style, applied = s.style_for("ann")
    assert names(applied) == ["concise", "formal"] and all(p.weight == 0.75 for p in applied)
    concise, formal = load_style("concise"), load_style("formal")
    weights = {c.name: c.weight for c in style.components}
    assert weights == pytest.approx({"concise": 0.75 * concise.components[0].weight,
                                     "formal": 0.75 * formal.components[0].weight})
    assert style.name == "prefs:concise+formal"


def test_observe_without_model_or_recogniser_says_what_to_pass(tmp_path):
    s = PreferenceStore(tmp_path / "p.sqlite")
    with pytest.raises(PreferenceError, match="model"):
        s.observe("ann", "be brief")


def test_many_threads_never_lose_an_update(tmp_path):
    s = store(tmp_path)
    threads, per_thread = 8, 15

    def work(i: int) -> None:
        mine = PreferenceStore(tmp_path / "prefs.sqlite", TableRecogniser(TABLE))
        for j in range(per_thread):
            mine.set("ann", f"p{i}-{j}")  # read-modify-write of the state
            mine.observe("ann", "hello")  # read-modify-write of the turn counter
            s.observe("bob", "be brief")  # the shared object too

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert len(s.show("ann")) == threads * per_thread
    assert s.turn("ann") == threads * per_thread and s.turn("bob") == threads * per_thread
    versions = [v.version for v in s.history("bob")]
    assert versions == list(range(1, threads * per_thread + 1))


WRITER = textwrap.dedent("""
    import sys
    from polysteer.preferences import PreferenceStore
    store = PreferenceStore(sys.argv[1])
    for j in range(int(sys.argv[3])):
        store.set("ann", f"{sys.argv[2]}-{j}")
""")


def test_two_processes_never_lose_an_update(tmp_path):
    path, n = tmp_path / "prefs.sqlite", 40
    PreferenceStore(path)  # created once, so both writers open an existing store
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag, str(n)])
             for tag in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    s = PreferenceStore(path)
    assert len(s.show("ann")) == 2 * n
    assert [v.version for v in s.history("ann")] == list(range(1, 2 * n + 1))


def test_corrupt_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "prefs.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CorruptFileError, match="not a readable polysteer preference store.*delete"):
        PreferenceStore(path)


def test_another_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(CorruptFileError, match="not a polysteer preference store.*invoices"):
        PreferenceStore(path)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "prefs.sqlite"
    PreferenceStore(path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(CorruptFileError, match="schema version 99.*upgrade polysteer"):
        PreferenceStore(path)


def test_cli_show_undo_reset_history(tmp_path, capsys):
    s = store(tmp_path)
    s.observe("ann", "be brief")
    s.observe("ann", "be formal")
    path = str(tmp_path / "prefs.sqlite")
    assert main(["prefs", "show", "ann", "--store", path]) == 0
    out = capsys.readouterr().out
    assert "concise" in out and "formal" in out
    assert main(["prefs", "undo", "ann", "--store", path]) == 0
    assert "formal" not in capsys.readouterr().out
    assert main(["prefs", "history", "ann", "--store", path, "--json"]) == 0
    import json

    history = json.loads(capsys.readouterr().out)
    assert [(v["version"], v["undone"]) for v in history] == [(1, False), (2, True)]
    assert main(["prefs", "reset", "ann", "--store", path]) == 0
    capsys.readouterr()
    assert main(["prefs", "show", "ann", "--store", path, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["prefs", "undo", "nobody", "--store", path]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_corrupt_store_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "bad.sqlite"
    path.write_bytes(b"garbage" * 1000)
    assert main(["prefs", "show", "ann", "--store", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
