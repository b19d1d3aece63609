"""Remembered preferences: per user, versioned, decaying over turns, in one SQLite file.

A user states a preference once ("please answer more briefly"); :meth:`PreferenceStore.observe`
recognises it (a :class:`~polysteer.preferences.Recogniser` reads the message through the model),
saves it as a new *version* of that user's preferences and advances the user's *turn* counter.
:meth:`PreferenceStore.style_for` mixes the active preferences into one polysteer
:class:`~polysteer.steering.Style` (each preference is the shipped style of the same name, scaled
by its weight) and says which were applied.

Storage (stdlib :mod:`sqlite3`, schema version in ``meta``)::

    meta(key, value)                               schema version
    users(user, turn)                              turns observed per user
    versions(user, version, turn, created, action, detail, state, undone)
                                                   every change is a new row; ``state`` is the JSON
                                                   list of the user's preferences after the change

* **Versions and undo.** Every change (a recognised statement, ``reset``) appends a version.
  :meth:`~PreferenceStore.undo` marks the newest live version undone, so the state goes back one;
  undoing again goes back further. History keeps undone versions (marked).
* **Decay.** A preference stated at turn ``t`` has weight ``strength * max(0, 1 - age / decay)``
  at turn ``t + age`` (linear fade over ``decay`` turns); restating it renews it. ``decay=0``
  never fades. Turns are counted by :meth:`~PreferenceStore.observe` (one call per user message).
* **Concurrency.** Each operation is one transaction opened with ``BEGIN IMMEDIATE`` (the write
  lock is taken before reading, so read-modify-write cycles never interleave), in WAL mode with a
  busy timeout: many threads and processes may write to one file and no update is lost.
* **Restart.** Everything is in the file; a new store on the same path sees it all.
* A file that is not a polysteer preference store, or has a newer schema, is a
  :class:`~polysteer.errors.CorruptFileError` that says what to do.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from polysteer.errors import ConfigError, CorruptFileError, PolysteerError
from polysteer.preferences.recogniser import Recognised, Recogniser, find_recogniser

SCHEMA_VERSION = 1
APPLICATION_ID = 0x70737072  # "pspr": marks the SQLite file as a polysteer preference store
DEFAULT_DECAY = 20
"""Turns over which an unrestated preference fades to nothing (0: never)."""
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (user TEXT PRIMARY KEY, turn INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS versions (
    user TEXT NOT NULL,
    version INTEGER NOT NULL,
    turn INTEGER NOT NULL,
    created REAL NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL,
    undone INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, version)
);
"""


class PreferenceError(PolysteerError, ValueError):
    """A preference operation that cannot be done (the message says why and what to do)."""


@dataclass(frozen=True)
class Preference:
    """One remembered preference of a user, as of the user's current turn.

    ``name`` is a shipped style name (``concise``, ``formal``...); ``weight`` is what is applied
    now: ``strength`` times the decay factor.
    """

    name: str
    weight: float
    strength: float = 1.0
    stated_turn: int = 0
    """The turn at which it was last stated."""
    age: int = 0
    """Turns since it was last stated."""
    statement: str = ""
    """The message that stated it."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Version:
    """One entry of a user's history."""

    version: int
    turn: int
    created: float
    action: str
    detail: str
    preferences: list[str]
    undone: bool

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_store_path() -> Path:
    """``<polysteer home>/preferences.sqlite``."""
    from polysteer.io import home

    return home() / "preferences.sqlite"


class PreferenceStore:
    """Per-user remembered preferences in SQLite; see the module docstring.

    Args:
        path: the SQLite file (created with its folder); default :func:`default_store_path`.
        recogniser: what reads preferences out of messages; default: the shipped recogniser that
            fits the model passed to :meth:`observe` (found on first use).
        decay: turns over which an unrestated preference fades out (0: never).
        style_loader: name -> :class:`~polysteer.steering.Style` (default: the shipped styles).

    Thread-safe: every call opens its own short transaction on its own connection.
    """

    def __init__(self, path: str | os.PathLike | None = None, recogniser: Recogniser | None = None, *,
                 decay: int = DEFAULT_DECAY, style_loader: Callable[[str], Any] | None = None):
        if not isinstance(decay, int) or decay < 0:
            raise ConfigError(f"decay must be a whole number of turns >= 0 (0: never fade), got {decay!r}")
        self.path = Path(path) if path is not None else default_store_path()
        self.recogniser = recogniser
        self.decay = decay
        self._style_loader = style_loader
        self._lock = threading.Lock()  # only guards lazy recogniser loading
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._init_schema()

    # -- connections -----------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise PreferenceError(f"cannot open preference store {self.path}: {err}") from err
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as err:
            conn.close()
            raise self._corrupt(err) from err
        return conn

    def _corrupt(self, err: Exception) -> CorruptFileError:
        return CorruptFileError(
            f"{self.path} is not a readable polysteer preference store ({err}); move it away or "
            "delete it to start a new store (its preferences are lost), or pass another --store PATH")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: the write lock is held from the first read."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as err:
            if isinstance(err, sqlite3.OperationalError) and "locked" in str(err):
                raise PreferenceError(f"preference store {self.path} stayed locked for "
                                      f"{BUSY_TIMEOUT_S:.0f} s by another writer; try again") from err
            raise self._corrupt(err) from err
        finally:
            conn.close()

    def _init_schema(self) -> None:
        with self._transaction() as conn:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
                raise CorruptFileError(
                    f"{self.path} is an SQLite file but not a polysteer preference store (tables: "
                    f"{', '.join(sorted(tables)) or 'none'}); pass another --store PATH")
            if app_id == 0:
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            version = int(row[0]) if row else 0
            if version != SCHEMA_VERSION:
                newer = version > SCHEMA_VERSION
                raise CorruptFileError(
                    f"{self.path} has preference-store schema version {version}; this polysteer "
                    f"reads version {SCHEMA_VERSION}: "
                    + ("upgrade polysteer" if newer else "move the file away to start a new store"))

    # -- reading state ---------------------------------------------------------------------------
    @staticmethod
    def _turn(conn: sqlite3.Connection, user: str) -> int:
        row = conn.execute("SELECT turn FROM users WHERE user=?", (user,)).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _current(conn: sqlite3.Connection, user: str) -> tuple[int, list[dict[str, Any]]]:
        """(newest live version or 0, its state)."""
        row = conn.execute("SELECT version, state FROM versions WHERE user=? AND undone=0 "
                           "ORDER BY version DESC LIMIT 1", (user,)).fetchone()
        return (int(row[0]), json.loads(row[1])) if row else (0, [])

    @staticmethod
    def _append(conn: sqlite3.Connection, user: str, turn: int, action: str, detail: str,
                state: list[dict[str, Any]]) -> int:
        row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM versions WHERE user=?",
                           (user,)).fetchone()
        version = int(row[0]) + 1
        conn.execute("INSERT INTO versions (user, version, turn, created, action, detail, state) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (user, version, turn, time.time(), action, detail, json.dumps(state)))
        return version

    def _weight(self, entry: dict[str, Any], turn: int) -> tuple[float, int]:
        age = max(0, turn - int(entry["stated_turn"]))
        fade = 1.0 if self.decay == 0 else max(0.0, 1.0 - age / self.decay)
        return float(entry["strength"]) * fade, age

    def _preferences(self, state: list[dict[str, Any]], turn: int) -> list[Preference]:
        out = []
        for entry in state:
            weight, age = self._weight(entry, turn)
            if weight > 0:
                out.append(Preference(entry["name"], round(weight, 6), float(entry["strength"]),
                                      int(entry["stated_turn"]), age, entry.get("statement", "")))
        return out

    # -- the protocol ----------------------------------------------------------------------------
    def observe(self, user: str, text: str, model: Any = None) -> list[Preference]:
        """Recognise the preferences ``text`` states, save them as a new version, advance the turn.

        Returns the preferences this message set (turned-off ones are left out); an ordinary
        request returns ``[]`` and only advances the user's turn.
        """
        _check_user(user)
        recognised = self._recognise(text, model)
        with self._transaction() as conn:
            turn = self._turn(conn, user) + 1
            conn.execute("INSERT INTO users (user, turn) VALUES (?, ?) ON CONFLICT(user) DO UPDATE "
                         "SET turn=excluded.turn", (user, turn))
            if not recognised:
                return []
            _, state = self._current(conn, user)
            by_name = {e["name"]: e for e in state}
            for r in recognised:
                if r.on:
                    by_name[r.name] = {"name": r.name, "strength": float(r.strength),
                                       "stated_turn": turn, "statement": text}
                else:
                    by_name.pop(r.name, None)
            new_state = list(by_name.values())
            detail = ", ".join(f"{'+' if r.on else '-'}{r.name}" for r in recognised)
            self._append(conn, user, turn, "observe", detail + f": {text[:200]}", new_state)
            names = {r.name for r in recognised if r.on}
            return [p for p in self._preferences(new_state, turn) if p.name in names]

    def set(self, user: str, name: str, strength: float = 1.0, *, statement: str = "") -> list[Preference]:
        """Set (``strength > 0``) or remove (``strength == 0``) preference ``name`` directly, as a new
        version at the user's current turn (no recognition); returns the active preferences."""
        _check_user(user)
        if not 0.0 <= float(strength) <= 1.0:
            raise PreferenceError(f"strength must be in [0, 1], got {strength}")
        with self._transaction() as conn:
            turn = self._turn(conn, user)
            _, state = self._current(conn, user)
            state = [e for e in state if e["name"] != name]
            if strength > 0:
                state.append({"name": name, "strength": float(strength), "stated_turn": turn,
                              "statement": statement})
            self._append(conn, user, turn, "set", f"{name}={strength:g}", state)
            return self._preferences(state, turn)

    def show(self, user: str) -> list[Preference]:
        """The user's active preferences now (weights after decay), strongest first."""
        _check_user(user)
        with self._transaction() as conn:
            turn = self._turn(conn, user)
            _, state = self._current(conn, user)
        return sorted(self._preferences(state, turn), key=lambda p: (-p.weight, p.name))

    def turn(self, user: str) -> int:
        """How many messages of ``user`` have been observed."""
        with self._transaction() as conn:
            return self._turn(conn, user)

    def style_for(self, user: str) -> tuple[Any, list[Preference]]:
        """(one Style mixing the active preferences, or None; the preferences applied).

        Each preference is the shipped style of its name (whose weights are calibrated: 1.0 is its
        recommended intensity), scaled by the preference's weight; the mix is their sum.
        """
        prefs = self.show(user)
        style = None
        for pref in prefs:
            part = self._load_style(pref.name).scaled(pref.weight)
            style = part if style is None else style + part
        if style is not None:
            style = replace(style, name="prefs:" + "+".join(p.name for p in prefs),
                            description=f"remembered preferences of {user}: " + ", ".join(
                                f"{p.name} x{p.weight:.2f}" for p in prefs))
        return style, prefs

    def undo(self, user: str) -> list[Preference]:
        """Go back one version (the newest live version is marked undone); returns the preferences
        now active. Raises :class:`PreferenceError` when there is nothing to undo."""
        _check_user(user)
        with self._transaction() as conn:
            version, _ = self._current(conn, user)
            if version == 0:
                raise PreferenceError(f"user {user!r} has no preference change to undo")
            conn.execute("UPDATE versions SET undone=1 WHERE user=? AND version=?", (user, version))
            turn = self._turn(conn, user)
            _, state = self._current(conn, user)
        return self._preferences(state, turn)

    def reset(self, user: str) -> None:
        """Forget every active preference of ``user`` (a new, empty version: undo brings them back)."""
        _check_user(user)
        with self._transaction() as conn:
            self._append(conn, user, self._turn(conn, user), "reset", "", [])

    def forget(self, user: str) -> None:
        """Delete everything stored about ``user`` (history and turns); cannot be undone."""
        _check_user(user)
        with self._transaction() as conn:
            conn.execute("DELETE FROM versions WHERE user=?", (user,))
            conn.execute("DELETE FROM users WHERE user=?", (user,))

    def history(self, user: str) -> list[Version]:
        """Every version of the user's preferences, oldest first (undone ones marked)."""
        _check_user(user)
        with self._transaction() as conn:
            rows = conn.execute("SELECT version, turn, created, action, detail, state, undone FROM "
                                "versions WHERE user=? ORDER BY version", (user,)).fetchall()
        return [Version(int(v), int(t), float(c), a, d, [e["name"] for e in json.loads(s)], bool(u))
                for v, t, c, a, d, s, u in rows]

    def users(self) -> list[str]:
        """Every user the store knows."""
        with self._transaction() as conn:
            rows = conn.execute("SELECT user FROM users UNION SELECT user FROM versions ORDER BY 1")
            return [r[0] for r in rows]

    # -- helpers ---------------------------------------------------------------------------------
    def _recognise(self, text: str, model: Any) -> Sequence[Recognised]:
        if self.recogniser is None:
            if model is None:
                raise PreferenceError("observe needs the model to read the message through (or a "
                                      "recogniser given to PreferenceStore)")
            with self._lock:
                if self.recogniser is None:
                    self.recogniser = find_recogniser(model)
        [found] = self.recogniser.recognise([text], model)
        return found

    def _load_style(self, name: str) -> Any:
        if self._style_loader is not None:
            return self._style_loader(name)
        from polysteer.steering import load_style

        return load_style(name)


def _check_user(user: Any) -> None:
    if not isinstance(user, str) or not user.strip():
        raise PreferenceError(f"a user id must be a non-empty string, got {user!r}")
