"""Issue 19's reproductions: hostile files and values give one clean polysteer error at load.

Each test here failed before the fix (hang, raw traceback, silent garbage or a half-written run
folder) and names what it reproduces.
"""

from __future__ import annotations

import json
import math
import os
import threading
import tracemalloc

import pytest
import torch

from polysteer.cli import main
from polysteer.config import compose
from polysteer.data.datasets import read_local
from polysteer.errors import ConfigError, CorruptFileError
from polysteer.features.classifier import fit_linear, from_fit, load_classifier, pooled_features
from polysteer.features.concepts import direction_set
from polysteer.features.dictionary import load_dictionary
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.io import load_json, load_yaml
from polysteer.steering.style import Style, load_style

SITE = "blocks.0.resid_post"


def alias_bomb() -> str:
    """The classic "billion laughs": nine levels of nine aliases, 9**9 strings once expanded."""
    lines = ['name: bomb', 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("components: *a8")
    return "\n".join(lines) + "\n"


# -- reproduction 2: the YAML alias bomb -----------------------------------------------------------
def test_a_yaml_alias_bomb_fails_fast_with_little_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 600
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError, match=r"bomb\.yaml.*alias"):
            Style.load(path)
        for loader in (lambda: load_style(path), lambda: load_yaml(path)):
            with pytest.raises(ConfigError, match="alias"):
                loader()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2 ** 20, f"{peak / 2 ** 20:.0f} MiB to refuse a 600-byte file"


def test_yaml_and_json_nested_500_deep_give_errors_not_recursion(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("name: x\ncomponents: " + "[" * 500 + "]" * 500 + "\n")
    with pytest.raises(ConfigError, match=r"deep\.yaml.*nested"):
        Style.load(deep)
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CorruptFileError, match="deep"):
        load_json(deep_json)
    folder = tmp_path / "dict"
    folder.mkdir()
    (folder / "dictionary.json").write_text('{"info": ' + "[" * 600 + "]" * 600 + "}")
    (folder / "dictionary.safetensors").write_bytes(b"")
    with pytest.raises(CorruptFileError, match="nested"):
        load_dictionary(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_named_pipe_in_place_of_a_file_is_refused_without_blocking(tmp_path):
    _dictionary().save(tmp_path / "dict")
    weights = tmp_path / "dict" / "dictionary.safetensors"
    weights.unlink()
    os.mkfifo(weights)
    style = tmp_path / "style.yaml"
    os.mkfifo(style)
    errors: list[BaseException] = []

    def load() -> None:
        for call in (lambda: load_dictionary(tmp_path / "dict"), lambda: Style.load(style)):
            try:
                call()
            except BaseException as err:  # collected and checked below
                errors.append(err)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "reading a named pipe blocked"
    assert len(errors) == 2 and all(isinstance(e, CorruptFileError) for e in errors), errors
    assert "named pipe" in str(errors[0]) and "dictionary.safetensors" in str(errors[0])


def test_non_utf8_style_and_data_files_are_named(tmp_path):
    style = tmp_path / "latin1.yaml"
    style.write_bytes("name: café\n".encode("latin-1"))
    with pytest.raises(CorruptFileError, match=r"latin1\.yaml is not UTF-8.*byte 9"):
        Style.load(style)
    for suffix in (".txt", ".csv", ".jsonl"):
        data = tmp_path / f"data{suffix}"
        data.write_bytes(b"text\n" + "caf\xe9 cr\xe8me".encode("latin-1") + b"\n")
        with pytest.raises(CorruptFileError, match=f"data{suffix} is not UTF-8"):
            read_local(data)


# -- reproduction 3: NaN and overflow -------------------------------------------------------------
def test_an_overflowing_intensity_is_refused_before_the_run(plugin_manager, tmp_path, capsys):
    code = main(["run", "experiment=reference-demo", "experiment.intensities=[1e39]",
                 "--output-dir", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: experiment.intensities[0]") and "out of range" in err
    assert list(tmp_path.iterdir()) == []
    for bad in ("[nan]", "[inf]", "[-1e5]", "[]", "x"):
        with pytest.raises(ConfigError, match="experiment.intensities"):
            compose(["experiment=reference-demo", f"experiment.intensities={bad}"])


def test_nan_in_a_dictionary_is_refused_at_load(tmp_path):
    folder = _dictionary().save(tmp_path / "dict")
    meta = json.loads((folder / "dictionary.json").read_text())
    meta["info"]["site_norm"] = math.nan
    (folder / "dictionary.json").write_text(json.dumps(meta))  # json writes a bare NaN
    with pytest.raises(CorruptFileError, match="site_norm: must be a finite number"):
        load_dictionary(folder)
    d = _dictionary()
    d.scale[1] = math.inf
    d.save(tmp_path / "inf")
    with pytest.raises(CorruptFileError, match="'scale' holds NaN or infinite"):
        load_dictionary(tmp_path / "inf")


@pytest.mark.parametrize(("yaml_weight", "match"), [
    (".nan", "finite"), ("1.0e+39", "out of range"), ("'0.5'", "remove the quotes"),
    ("1e39", "write it with a dot"),
])
def test_style_weights_are_checked_at_load(tmp_path, yaml_weight, match):
    path = tmp_path / "s.yaml"
    path.write_text(f"components:\n  - {{dictionary: d, feature: 0, weight: {yaml_weight}}}\n")
    with pytest.raises(ConfigError, match=rf"components\[0\]\.weight.*{match}"):
        Style.load(path)


# -- reproduction 5: raw tracebacks ----------------------------------------------------------------
def test_a_quoted_number_in_a_schedule_is_refused_at_load_not_in_the_hook(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("components:\n  - {dictionary: d, feature: 0, "
                    "schedule: {kind: constant, value: '2'}}\n")
    with pytest.raises(ConfigError, match=r"components\[0\]\.schedule.*'2'.*remove the quotes"):
        Style.load(path)
    for schedule in ("{kind: ramp, end: '0.5'}", "{kind: window, start: 2}",
                     "{kind: piecewise, points: [[0, 1], [0.5]]}", "{kind: decay, value: 1e300}"):
        path.write_text(f"components:\n  - {{dictionary: d, feature: 0, schedule: {schedule}}}\n")
        with pytest.raises(ConfigError, match=r"components\[0\]\.schedule"):
            Style.load(path)


def test_list_index_overrides_work_and_bad_overrides_name_themselves(plugin_manager):
    comp = compose(["experiment=reference-demo", "style.components.0.weight=0.5"])
    assert comp.config.style.components[0].weight == 0.5
    for override, match in [("style.components.0=[1", "not valid YAML"),
                            ("experiment.intensities.x=1", "experiment.intensities.x=1"),
                            ("style.components.9.weight=1", r"components\[9\]"),
                            ("seed=-1", "seed"), ("experiment.name=[1,2]", "experiment.name"),
                            ("a..b=1", "dotted key"),
                            ("dictionary=" + "x" * 400, "no such dictionary config"),
                            ("style=../style/reference-demo", "no such style config")]:
        with pytest.raises(ConfigError, match=match):
            compose(["experiment=reference-demo", override])


def test_a_damaged_classifier_folder_gives_an_error_naming_the_field(tmp_path):
    d = _dictionary()
    d.save(tmp_path / "dict")
    clf = _classifier(d)
    damages = {
        "no classes": lambda m, t: m.pop("classes"),
        "one class": lambda m, t: m.update(classes=["spam"]),
        "bad pools": lambda m, t: m.update(pools=["median"]),
        "width text": lambda m, t: m.update(width="3"),
        "nan site norm": lambda m, t: m.update(site_norm=math.nan),
        "columns not a list": lambda m, t: m.update(columns={"feature": 1}),
        "bad dictionary ref": lambda m, t: m.update(dictionary={"ref": 3}),
        "bad model": lambda m, t: m.update(model={"x": 1}),
        "column out of range": lambda m, t: t.update(columns=torch.tensor([99])),
        "short weight": lambda m, t: t.update(weight=torch.zeros(0)),
        "nan mean": lambda m, t: t.update(mean=t["mean"] * math.nan),
        "zero std": lambda m, t: t.update(std=t["std"] * 0),
        "no bias": lambda m, t: t.pop("bias"),
        "two biases": lambda m, t: t.update(bias=torch.zeros(2)),
    }
    from safetensors.torch import load_file, save_file

    for n, (what, damage) in enumerate(damages.items()):
        folder = clf.save(tmp_path / f"clf{n}")
        meta = json.loads((folder / "classifier.json").read_text())
        tensors = load_file(folder / "classifier.safetensors")
        damage(meta, tensors)
        (folder / "classifier.json").write_text(json.dumps(meta))
        save_file(tensors, folder / "classifier.safetensors")
        with pytest.raises(CorruptFileError, match=rf"clf{n}") as info:
            load_classifier(folder)
        assert "classifier" in str(info.value), what


# -- reproduction 6: debris ------------------------------------------------------------------------
@pytest.mark.parametrize("override", [
    "experiment.intensities=[1e39]",
    "style.components.0.dictionary=no-such-dictionary",
    "style.components.0.feature=no such feature",
    "style.components.0.schedule.kind=no-such-schedule",
    "experiment.measures=[no_such_measure]",
    "experiment.inputs=[[1000000]]",
    "experiment.name=../escape",
])
def test_a_failed_run_leaves_no_run_folder(plugin_manager, tmp_path, capsys, override):
    code = main(["run", "experiment=reference-demo", override, "--output-dir", str(tmp_path)])
    assert code != 0
    assert "error:" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_what_a_killed_run_left_is_removed_by_the_next_run(plugin_manager, tmp_path, capsys):
    dead = tmp_path / ".reference-demo.999999999-0123abcd.x1y2.tmp"  # a run killed earlier
    (dead / "outputs").mkdir(parents=True)
    (dead / "config.yaml").write_text("half")
    assert main(["run", "experiment=reference-demo", "experiment.intensities=[0]",
                 "--output-dir", str(tmp_path)]) == 0
    (run,) = tmp_path.iterdir()
    assert run.name.endswith("-reference-demo") and (run / "report.html").is_file()


# -- helpers ---------------------------------------------------------------------------------------
def _dictionary():
    vectors = list(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
    model = ModelFingerprint(architecture="arch", signature=[1.0, 2.0, 3.0], name="m")
    return direction_set(vectors, ["alpha", "beta", "gamma"], site=SITE, site_norm=2.0,
                         model=model, method="test")


def _classifier(d):
    gen = torch.Generator().manual_seed(0)
    acts = [0.3 * torch.randn(5, 8, generator=gen) + (i % 2) * d.directions[1] for i in range(40)]
    y = torch.tensor([i % 2 for i in range(40)]).float()
    fit = fit_linear(pooled_features(acts, d, ("max", "mean")), y, folds=2)
    return from_fit(fit, name="beta", classes=("no", "yes"), site=SITE, site_norm=2.0, channels=8,
                    model=d.info.model, dictionary=d, dictionary_ref="dict", pools=("max", "mean"))

