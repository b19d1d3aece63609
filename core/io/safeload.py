"""Reading untrusted files: one guarded path for every YAML, JSON and tensor file polysteer loads.

A style, concept spec, config, dictionary or classifier may come from anyone. Every loader reads
its files through the functions here, which refuse (with a :class:`~polysteer.errors.ConfigError`
or :class:`~polysteer.errors.CorruptFileError` that names the file, the place and the fix):

- anything that is not a regular file (a named pipe, a device, a folder): it is never opened,
  so it cannot block;
- text that is not UTF-8 (the byte offset is named) or larger than :data:`MAX_TEXT_BYTES`;
- YAML with more than :data:`MAX_ALIASES` aliases or whose aliases would expand to more than
  :data:`MAX_NODES` nodes (the "billion laughs" bomb), and YAML or JSON nested deeper than
  :data:`MAX_DEPTH` (instead of a ``RecursionError``);
- JSON's non-standard ``NaN``/``Infinity`` where the caller asks for finite numbers.

:func:`finite` and :func:`check_finite_tree` check numbers once, at load, so nothing malformed
reaches a forward hook.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from polysteer.errors import ConfigError, CorruptFileError

MAX_TEXT_BYTES = 64 << 20
"""Largest YAML/JSON text file read whole (64 MiB); tensors go through safetensors instead."""
MAX_ALIASES = 256
"""Most YAML aliases (``*name``) one document may use."""
MAX_NODES = 1_000_000
"""Most nodes a YAML document may hold once its aliases are expanded."""
MAX_DEPTH = 64
"""Deepest nesting of lists/mappings accepted in YAML or JSON."""


def check_regular_file(path: str | os.PathLike, what: str = "file") -> Path:
    """``path`` if it is a regular file (symlinks followed); else a clear error, never a block.

    A missing file raises :class:`FileNotFoundError` (the CLI prints it as one ``error:`` line); a
    named pipe, device, socket or folder raises :class:`CorruptFileError`.
    """
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    except OSError as err:
        raise CorruptFileError(f"{what} {path} cannot be read ({err.strerror}); check its "
                               "permissions") from None
    if not stat.S_ISREG(info.st_mode):
        kind = ("a folder" if stat.S_ISDIR(info.st_mode) else
                "a named pipe" if stat.S_ISFIFO(info.st_mode) else
                "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
        raise CorruptFileError(f"{what} {path} is {kind}, not a regular file: put the real file "
                               "there")
    return path


def read_bytes_guarded(path: str | os.PathLike, what: str = "file",
                       limit: int = MAX_TEXT_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (opened without blocking)."""
    path = check_regular_file(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise CorruptFileError(f"{what} {path} cannot be opened ({err.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):  # swapped after the check
            raise CorruptFileError(f"{what} {path} is not a regular file: put the real file there")
        data = handle.read(min(info.st_size, limit) + 1) if info.st_size <= limit else b""
        while len(data) <= limit and (block := handle.read(1 << 20)):  # grew meanwhile
            data += block
    if len(data) > limit or info.st_size > limit:
        raise CorruptFileError(f"{what} {path} is over {limit >> 20} MiB; a {what} is never this "
                               "large: check that this is the right file")
    return data


def read_text_guarded(path: str | os.PathLike, what: str = "file",
                      limit: int = MAX_TEXT_BYTES) -> str:
    """A regular file's text, which must be UTF-8 (a BOM is dropped)."""
    data = read_bytes_guarded(path, what, limit)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorruptFileError(
            f"{what} {path} is not UTF-8 text (byte {err.start}: {data[err.start:err.start + 1]!r}); "
            "save it as UTF-8") from None


class _GuardedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with alias, expansion and depth limits applied while composing."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: more than {MAX_ALIASES} YAML aliases "
                                  "(*name); write the values out instead")
            return Composer.compose_node(self, parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"line {mark.line + 1}: nested more than {MAX_DEPTH} levels "
                                  "deep; flatten the document")
            return Composer.compose_node(self, parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: Node) -> int:
    """Number of nodes ``root`` holds with every alias expanded (memoised, so cheap); a node that
    contains itself through an alias (``&a [*a]``) is refused."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, ScalarNode):
            sizes[id(node)] = 1
            continue
        children: list[Node] = (list(node.value) if isinstance(node, SequenceNode) else
                                [n for pair in node.value for n in pair]
                                if isinstance(node, MappingNode) else [])
        if done:
            open_nodes.discard(id(node))
            total = 1 + sum(sizes.get(id(c), 1) for c in children)
            sizes[id(node)] = min(total, MAX_NODES + 1)
            continue
        if id(node) in open_nodes:
            raise ConfigError("an alias refers to a value that contains it (a recursive "
                              "structure); write the values out instead")
        open_nodes.add(id(node))
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                raise ConfigError("an alias refers to a value that contains it (a recursive "
                                  "structure); write the values out instead")
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def parse_yaml(text: str, source: str = "YAML") -> Any:
    """Parse YAML text safely (no tags that build objects, alias and depth limits)."""
    try:
        loader = _GuardedLoader(text)
    except yaml.YAMLError as err:  # the reader refuses control characters up front
        raise ConfigError(f"{source} is not valid YAML: {err}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_NODES:
            raise ConfigError(f"its aliases expand to more than {MAX_NODES:,} values (an alias "
                              "bomb?); write the values out instead")
        return loader.construct_document(node)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply; flatten the document") from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike, what: str = "YAML file") -> Any:
    """Read and parse a YAML file through every guard above."""
    return parse_yaml(read_text_guarded(path, what), str(path))


def _depth_ok(data: Any, source: str) -> None:
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise CorruptFileError(f"{source}: nested more than {MAX_DEPTH} levels deep")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items if isinstance(v, dict | list))


def parse_json(text: str, source: str = "JSON", *, allow_nonfinite: bool = True) -> Any:
    """Parse JSON text with a depth limit; ``allow_nonfinite=False`` refuses NaN/Infinity."""

    def constant(name: str) -> float:
        if not allow_nonfinite:
            raise ValueError(f"{name} is not a number JSON allows here")
        return float(name)

    try:
        data = json.loads(text, parse_constant=constant)
    except RecursionError:
        raise CorruptFileError(f"{source}: nested too deeply to be a polysteer file") from None
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise CorruptFileError(f"{source} is not valid JSON ({err}); the file is damaged: "
                               "recreate or re-download it") from None
    _depth_ok(data, source)
    return data


def load_json(path: str | os.PathLike, what: str = "JSON file", *,
              allow_nonfinite: bool = True) -> Any:
    """Read and parse a JSON file through every guard above."""
    return parse_json(read_text_guarded(path, what), str(path), allow_nonfinite=allow_nonfinite)


def quoted_hint(value: Any) -> str:
    """The fix for a number that arrived as text: ``'2'`` (quoted) or ``1e39`` (YAML 1.1 reads
    exponents without a dot as text)."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    if any(c in value for c in "eE") and "." not in value:
        return f" (YAML reads {value} as text: write it with a dot, e.g. {value.replace('e', '.0e', 1)})"
    return " (remove the quotes)"


def finite(value: Any, where: str, *, low: float | None = None, high: float | None = None,
           integer: bool = False, error: type[Exception] = ConfigError) -> float:
    """``value`` as a float if it is a real number (not a bool or a quoted string), finite and in
    ``[low, high]``; else ``error`` naming ``where`` and what is allowed."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise error(f"{where}: expected {kind}, got {value!r}" + quoted_hint(value))
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise error(f"{where}: must be a finite number, got {value!r}")
    if (low is not None and number < low) or (high is not None and number > high):
        span = (f"between {low:g} and {high:g}" if low is not None and high is not None else
                f"at least {low:g}" if low is not None else f"at most {high:g}")
        raise error(f"{where}: {value!r} is out of range; use a value {span}")
    return number


def check_finite_tree(data: Any, where: str, error: type[Exception] = ConfigError) -> None:
    """Refuse NaN or infinite floats anywhere inside ``data`` (naming the key path)."""
    stack: list[tuple[Any, str]] = [(data, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise error(f"{path}: must be a finite number, got {value!r}")
        if isinstance(value, dict):
            stack.extend((v, f"{path}.{k}") for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))
