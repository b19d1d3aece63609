"""Launchers: run a sweep's cells in this process (``serial``) or as Ray actors (``ray``).

A sweep (``polysteer run``, a calibration) is a list of independent *cells* that all need the same
expensive *state* (a loaded model). A launcher runs::

    for index, result in launcher.map(setup, work, items):
        ...  # results arrive as cells finish (streamed), each with its item's index

where ``state = setup()`` runs **once per worker** (one model load per worker, not per cell) and
``work(state, item)`` runs once per item. ``setup`` and ``work`` must be picklable for the Ray
launcher (module-level functions, or ``functools.partial`` of them, with plain arguments).
Results come back to the caller's process, which writes them into its run folder: workers
need no shared file system.

* :class:`SerialLauncher`: in this process, items in order (the default).
* :class:`RayLauncher`: one Ray actor per worker (``num_workers``, default: the CPUs Ray offers
  divided by ``num_cpus`` per worker), on a local Ray started for the sweep or on a cluster at
  ``address`` (``ray://host:10001`` or ``auto``). Ray is an optional extra:
  ``pip install 'polysteer[ray]'``.

:func:`launcher_from_config` builds one from a ``launcher`` config node (``kind: serial|ray`` and
the Ray options); :func:`open_launcher` is the same as a context manager that closes it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

from polysteer.errors import ConfigError, PolysteerError

S = TypeVar("S")
T = TypeVar("T")
R = TypeVar("R")

LAUNCHERS = ("serial", "ray")
RAY_INSTALL = "pip install 'polysteer[ray]'"


@runtime_checkable
class Launcher(Protocol):
    """Runs ``work(state, item)`` for many items with ``state = setup()`` once per worker."""

    name: str

    def map(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any],
            items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        """Yield ``(index, work(state, items[index]))`` for every item as each finishes."""

    def close(self) -> None:
        """Release workers (and a Ray runtime this launcher started)."""


class SerialLauncher:
    """Every item in this process, in order; ``setup`` runs once per :meth:`map`."""

    name = "serial"

    def map(self, setup: Callable[[], S], work: Callable[[S, T], R],
            items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        state = setup()
        for i, item in enumerate(items):
            yield i, work(state, item)

    def close(self) -> None:
        return None


class _Worker:
    """The Ray actor: holds one ``setup()`` state and runs items on it."""

    def __init__(self, setup: Callable[[], Any], work: Callable[[Any, Any], Any]):
        self.state, self.work = setup(), work

    def run(self, index: int, item: Any) -> tuple[int, Any]:
        return index, self.work(self.state, item)


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise PolysteerError(f"launcher=ray needs Ray, which is not installed ({err}); install it "
                             f"with: {RAY_INSTALL}") from None
    return ray


class RayLauncher:
    """Cells as calls on Ray actors; one actor (and one ``setup``, e.g. one model load) per worker.

    ``address``: a running cluster (``auto``, ``ray://head:10001``); ``None`` starts a local Ray
    with ``num_cpus`` CPUs (``None``: all) and shuts it down on :meth:`close`. ``num_workers``:
    actors per :meth:`map` (default: the cluster's CPUs // ``cpus_per_worker``, at most one per
    item). ``gpus_per_worker`` reserves GPUs for each actor on a GPU cluster.
    """

    name = "ray"

    def __init__(self, address: str | None = None, num_workers: int | None = None,
                 num_cpus: int | None = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, runtime_env: Mapping[str, Any] | None = None):
        self.address, self.num_workers, self.num_cpus = address, num_workers, num_cpus
        self.cpus_per_worker, self.gpus_per_worker = float(cpus_per_worker), float(gpus_per_worker)
        self.runtime_env = dict(runtime_env or {})
        self._started = False
        if num_workers is not None and num_workers < 1:
            raise ConfigError(f"launcher.num_workers must be at least 1, got {num_workers}")

    def _init(self) -> Any:
        ray = _ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False,
                                       "log_to_driver": False}
            if self.address:
                options["address"] = self.address
            elif self.num_cpus:
                options["num_cpus"] = int(self.num_cpus)
            if self.runtime_env:
                options["runtime_env"] = self.runtime_env
            ray.init(**options)
            self._started = True
        return ray

    def workers_for(self, items: int) -> int:
        """How many actors a map over ``items`` items starts."""
        if self.num_workers is not None:
            return max(1, min(self.num_workers, items))
        ray = self._init()
        cpus = float(ray.available_resources().get("CPU", 1.0)) or 1.0
        return max(1, min(int(cpus // max(self.cpus_per_worker, 1e-9)) or 1, items))

    def map(self, setup: Callable[[], S], work: Callable[[S, T], R],
            items: Sequence[T]) -> Iterator[tuple[int, R]]:
        if not items:
            return
        ray = self._init()
        actor = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker)(_Worker)
        workers = [actor.remote(setup, work) for _ in range(self.workers_for(len(items)))]
        try:
            pending: dict[Any, Any] = {}
            queue = list(enumerate(items))
            idle = list(workers)
            while queue or pending:
                while queue and idle:  # keep every worker busy with one item
                    w = idle.pop()
                    index, item = queue.pop(0)
                    pending[w.run.remote(index, item)] = w
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    idle.append(pending.pop(ref))
                    try:
                        yield ray.get(ref)
                    except ray.exceptions.RayTaskError as err:
                        cause = err.as_instanceof_cause()
                        if isinstance(cause, PolysteerError):
                            raise cause from None
                        raise
        finally:
            for w in workers:
                ray.kill(w)

    def close(self) -> None:
        if self._started:
            ray = _ray()
            ray.shutdown()
            self._started = False


def launcher_from_config(node: Mapping[str, Any] | str | None) -> Launcher:
    """A launcher from a config node: ``{kind: serial}`` or ``{kind: ray, address: ..., ...}``."""
    if node is None or isinstance(node, str):
        node = {"kind": node or "serial"}
    options = {k: v for k, v in dict(node).items() if v is not None}
    kind = str(options.pop("kind", "serial"))
    if kind == "serial":
        return SerialLauncher()
    if kind == "ray":
        _ray()  # the install hint before anything else
        allowed = ("address", "num_workers", "num_cpus", "cpus_per_worker", "gpus_per_worker",
                   "runtime_env")
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(f"launcher: unknown key(s) {unknown} for kind ray; allowed: "
                              f"{', '.join(allowed)}")
        if "address" not in options and os.environ.get("RAY_ADDRESS"):
            options["address"] = os.environ["RAY_ADDRESS"]
        return RayLauncher(**options)
    raise ConfigError(f"launcher.kind: unknown launcher {kind!r}; choose one of {', '.join(LAUNCHERS)}")


@contextlib.contextmanager
def open_launcher(node: Mapping[str, Any] | str | None) -> Iterator[Launcher]:
    """:func:`launcher_from_config` that is closed (Ray shut down if it started it) on exit."""
    launcher = launcher_from_config(node)
    try:
        yield launcher
    finally:
        launcher.close()
