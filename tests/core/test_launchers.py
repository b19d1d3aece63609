"""Sweep launchers: serial and Ray give the same run; Ray is optional with a clear install hint.

Ray starts slowly, so one local Ray (2 CPUs) serves the whole module and is shut down at its end.
"""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

import pytest

from polysteer.config import compose
from polysteer.errors import ConfigError, PolysteerError
from polysteer.workflows import SerialLauncher, launcher_from_config, run_experiment


def _setup(tag: str) -> dict:
    return {"tag": tag, "pid": os.getpid(), "id": id(object())}


def _work(state: dict, item: int) -> tuple[str, int, int]:
    return state["tag"], (state["pid"], state["id"]), item * item


def test_serial_launcher_sets_up_once_and_keeps_order():
    calls = []

    def setup():
        calls.append(1)
        return 10

    out = list(SerialLauncher().map(setup, lambda s, x: s + x, [1, 2, 3]))
    assert out == [(0, 11), (1, 12), (2, 13)] and calls == [1]
    assert list(SerialLauncher().map(setup, lambda s, x: x, [])) == [] and calls == [1]


def test_launcher_config_errors_name_the_fix(monkeypatch):
    assert isinstance(launcher_from_config(None), SerialLauncher)
    assert isinstance(launcher_from_config({"kind": "serial"}), SerialLauncher)
    with pytest.raises(ConfigError, match="unknown launcher 'dask'"):
        launcher_from_config({"kind": "dask"})
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(PolysteerError, match=r"pip install 'polysteer\[ray\]'"):
        launcher_from_config({"kind": "ray"})
    with pytest.raises(ConfigError, match="not a config group|launcher"):
        compose(["launcher=nope"])


def _run(tmp_path: Path, name: str, *extra: str) -> Path:
    comp = compose(["experiment=reference-demo", "experiment.seeds=[0,1]",
                    "experiment.prompts=[[[3,7,1,12]],[[25,2,8,17]]]", *extra])
    return run_experiment(comp, output_dir=tmp_path / name)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".txt", ".jsonl", ".png", ".wav")
            and not p.name.startswith("measures")}


def test_ray_launcher_matches_serial_with_one_setup_per_worker(tmp_path):
    ray = pytest.importorskip("ray")
    from polysteer.workflows import RayLauncher

    launcher = RayLauncher(num_cpus=2)
    try:
        results = dict(launcher.map(partial(_setup, "m"), _work, list(range(7))))
        assert sorted(results) == list(range(7))
        assert [r[2] for _, r in sorted(results.items())] == [i * i for i in range(7)]
        states = {r[1] for r in results.values()}
        assert 1 <= len(states) <= 2  # two workers, each set up once for seven items
        # the whole run: same metrics and the same output files as the serial launcher
        serial = _run(tmp_path, "serial")
        parallel = _run(tmp_path, "ray", "launcher=ray", "launcher.num_workers=2")
        assert ray.is_initialized()  # the launcher joined the running Ray and left it up
        rows = [[json.loads(line) for line in (f / "metrics.jsonl").read_text().splitlines()]
                for f in (serial, parallel)]
        assert len(rows[0]) == 2 * 2 * 5 and rows[0] == rows[1]
        assert _tree(serial) == _tree(parallel)
        assert "launcher" in (parallel / "config.yaml").read_text()
        assert (parallel / "report.html").read_text().count("<h2>") == (
            serial / "report.html").read_text().count("<h2>")
    finally:
        launcher.close()
    assert not ray.is_initialized()
