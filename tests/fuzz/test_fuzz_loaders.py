"""Property-based fuzzing of every loader (issue 19): thousands of generated documents, files and
overrides, each of which must load or fail with a polysteer error (never a raw traceback, a hang,
or a value that later breaks inside a forward hook).

Two kinds of input per loader: *mutations* of a valid document (one value anywhere replaced by an
arbitrary JSON/YAML value, a key dropped, a key added) which reach deep into validation, and raw
generated text/bytes which exercise the parsers. Runs are derandomised (the same inputs every run,
so CI failures reproduce) and sized to finish in well under two minutes on one CPU core;
``POLYSTEER_FUZZ_SCALE=10`` multiplies every budget for a longer local hunt.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from polysteer.config import compose
from polysteer.data.datasets import read_local
from polysteer.errors import PolysteerError
from polysteer.features.classifier import fit_linear, from_fit, load_classifier, pooled_features
from polysteer.features.concepts import direction_set
from polysteer.features.dictionary import SparseAutoencoder, load_dictionary
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.features.saelens import export_saelens, load_saelens
from polysteer.io import load_json, load_yaml
from polysteer.models.reference import ReferenceAdapter
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style

SCALE = float(os.environ.get("POLYSTEER_FUZZ_SCALE", "1"))
CLEAN = (PolysteerError, FileNotFoundError)
"""What a loader may raise: the CLI prints these as one ``error:`` line."""
SITE = "blocks.0.resid_post"


def fuzz(examples: int):
    """Hypothesis settings of one loader: ``examples`` inputs (times the scale), reproducible."""
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, derandomize=True,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture,
                                           HealthCheck.filter_too_much])


# -- generated values -------------------------------------------------------------------------------
SCALARS = (st.none() | st.booleans() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
           | st.sampled_from(["2", "0.5", "1e39", "nan", "constant", "ramp", "all", "add",
                              "high tokens", "reference-high-tokens", "max", "mean", "topk",
                              "${seed}", "blocks.0.resid_post", "", "../x", "\x00", "é"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | st.sampled_from(
                          ["kind", "value", "start", "end", "weight", "feature", "name"]),
                          inner, max_size=4), max_leaves=12)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw, valid: Any, rounds: int = 3) -> Any:
    """``valid`` with 1..rounds changes: a value replaced, a key dropped or a key added."""
    doc = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, rounds))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
        if not path:
            if action == "replace":
                doc = draw(VALUES)
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        last = path[-1]
        if action == "drop":
            del parent[last]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(VALUES)
        else:
            parent[last] = draw(VALUES)
    return doc


def clean(call, *args: Any) -> Any:
    """Run a loader; a polysteer error is fine, anything else fails the property."""
    try:
        return call(*args)
    except CLEAN:
        return None


@pytest.fixture(scope="module")
def work() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="polysteer-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _dump_yaml(data: Any) -> str:
    try:
        return yaml.safe_dump(data, allow_unicode=True)
    except (yaml.YAMLError, ValueError):
        return json.dumps(data, default=str)


# -- styles: load, then steer the reference model (types are checked before any hook runs) ---------
STYLE = yaml.safe_load((Path(__file__).parents[2] / "configs" / "style" / "reference-demo.yaml")
                       .read_text())
STYLE["rules"] = [{"when": {"dictionary": "reference-high-tokens", "feature": "high tokens",
                            "above": 0.5, "for_steps": 1}, "then": {"stop": "high", "steps": 2}}]
STYLE["concepts"] = {"c": {"text": {"dictionary": "reference-high-tokens", "feature": 0}}}
STYLE["components"].append({"concept": "c", "weight": 0.5,
                            "schedule": {"kind": "piecewise", "points": [[0, 1], [1, 0]]},
                            "positions": {"kind": "span", "start": 0.0, "end": 1.0}})


@pytest.fixture(scope="module")
def reference():
    return ReferenceAdapter()


@fuzz(250)
@given(doc=mutated(STYLE), intensity=st.one_of(st.floats(-3, 3), VALUES))
def test_styles_load_and_steer_or_fail_cleanly(plugin_manager, reference, work, doc, intensity):
    path = work / "style.yaml"
    path.write_text(_dump_yaml(doc), encoding="utf-8")
    style = clean(Style.load, path)
    if style is None:
        return
    base = Path(__file__).parents[2] / "configs" / "style"
    style.base_dir = base

    def run() -> None:
        with steer(reference, style, intensity=intensity):
            reference.generate(torch.tensor([[3, 7, 1]]), max_new_tokens=2)

    clean(run)


@fuzz(400)
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_raw_yaml_text_parses_or_fails_cleanly(work, text):
    path = work / "raw.yaml"
    path.write_bytes(text.encode("utf-8", "surrogatepass") if text.isascii() else
                     text.encode("latin-1", "replace"))
    data = clean(load_yaml, path)
    if data is not None:
        clean(Style.from_dict, data)


# -- configs and experiments: overrides on the command line ---------------------------------------
KEYS = ["seed", "output_dir", "experiment.intensities", "experiment.name", "experiment.measures",
        "experiment.inputs", "experiment.generate.max_new_tokens", "style.components.0.weight",
        "style.components.0.schedule", "style.components.0.schedule.end", "style.components",
        "style.name", "model.kind", "model.d_model", "dictionary", "experiment", "style", "model",
        "style.components.0", "experiment.intensities.0", "a.b.c", "style.rules.0.when.above"]
OVERRIDE_VALUES = (st.sampled_from(["[1e39]", "[nan]", "0.5", "'2'", "[0, 1]", "{a: 1}", "null",
                                    "[1", "${seed}", "${oc.env:HOME}", "reference", "x", "[[1,2]]",
                                    "&a [*a]", "-1", "1e309", "{kind: ramp, end: '2'}", "[]", ""])
                   | VALUES.map(lambda v: json.dumps(v, default=str)) | st.text(max_size=20))


@fuzz(250)
@given(overrides=st.lists(st.tuples(st.sampled_from(KEYS) | st.text(max_size=12),
                                    OVERRIDE_VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
                          min_size=1, max_size=3))
def test_config_overrides_compose_or_fail_cleanly(plugin_manager, overrides):
    comp = clean(compose, ["experiment=reference-demo", *overrides])
    if comp is not None:
        clean(Style.from_dict, comp.config.style and dict(comp.config.style))


# -- dictionaries ----------------------------------------------------------------------------------
def _dictionary():
    vectors = list(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)))
    model = ModelFingerprint(architecture="arch", signature=[1.0, 2.0, 3.0], name="m")
    return direction_set(vectors, ["alpha", "beta", "gamma"], site=SITE, site_norm=2.0,
                         model=model, method="test")


def _sae():
    info = _dictionary().info
    return SparseAutoencoder(8, 6, info, activation="topk", k=2, labels=list("abcdef"))


TENSOR = st.sampled_from([
    torch.zeros(0), torch.zeros(3), torch.zeros(3, 8), torch.ones(8, 3), torch.full((3,), float("nan")),
    torch.full((3, 8), float("inf")), torch.zeros(3, 8, dtype=torch.int64), torch.ones(6, 8),
    torch.ones(8, 6), torch.ones(6), torch.ones(8), torch.zeros(2, 2, 2), torch.tensor([99]),
])


@st.composite
def damaged_tensors(draw, valid: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    tensors = dict(valid)
    for _ in range(draw(st.integers(0, 2))):
        name = draw(st.sampled_from([*tensors, "extra"]))
        if draw(st.booleans()) and name in tensors:
            del tensors[name]
        else:
            tensors[name] = draw(TENSOR).clone()
    return tensors


def _folder_files(folder: Path, json_name: str, weights_name: str) -> tuple[Any, dict]:
    from safetensors.torch import load_file

    return (json.loads((folder / json_name).read_text()),
            load_file(str(folder / weights_name)))


@pytest.fixture(scope="module")
def valid_dictionaries(work):
    out = {}
    for name, d in (("directions", _dictionary()), ("sae", _sae())):
        folder = d.save(work / f"valid-{name}")
        out[name] = _folder_files(folder, "dictionary.json", "dictionary.safetensors")
    return out


def _write_folder(folder: Path, json_name: str, meta: Any, weights_name: str,
                  tensors: dict[str, torch.Tensor], raw_json: str | None = None) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / json_name).write_text(raw_json if raw_json is not None
                                    else json.dumps(meta, default=str))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / weights_name))


@fuzz(500)
@given(data=st.data(), kind=st.sampled_from(["directions", "sae"]))
def test_dictionary_folders_load_or_fail_cleanly(work, valid_dictionaries, data, kind):
    meta, tensors = valid_dictionaries[kind]
    meta = data.draw(mutated(meta))
    tensors = data.draw(damaged_tensors(tensors))
    folder = work / "dict"
    _write_folder(folder, "dictionary.json", meta, "dictionary.safetensors", tensors)
    d = clean(load_dictionary, folder)
    if d is not None:  # a dictionary that loads also encodes and decodes
        x = torch.randn(2, d.d_in)
        assert torch.isfinite(d.decode(d.encode(x))).all()


@fuzz(150)
@given(raw=st.binary(max_size=200), json_text=st.text(max_size=200))
def test_damaged_dictionary_bytes_fail_cleanly(work, raw, json_text):
    folder = work / "dict-bytes"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / "dictionary.json").write_text(json_text, encoding="utf-8", errors="surrogatepass")
    (folder / "dictionary.safetensors").write_bytes(raw)
    clean(load_dictionary, folder)


# -- classifiers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_classifier(work):
    d = _dictionary()
    d.save(work / "dict-for-clf")
    gen = torch.Generator().manual_seed(0)
    acts = [0.3 * torch.randn(5, 8, generator=gen) + (i % 2) * d.directions[1] for i in range(40)]
    y = torch.tensor([i % 2 for i in range(40)]).float()
    fit = fit_linear(pooled_features(acts, d, ("max", "mean")), y, folds=2)
    clf = from_fit(fit, name="beta", classes=("no", "yes"), site=SITE, site_norm=2.0, channels=8,
                   model=d.info.model, dictionary=d, dictionary_ref="dict-for-clf",
                   pools=("max", "mean"))
    folder = clf.save(work / "valid-clf")
    return _folder_files(folder, "classifier.json", "classifier.safetensors"), acts


@fuzz(500)
@given(data=st.data())
def test_classifier_folders_load_or_fail_cleanly(work, valid_classifier, data):
    (meta, tensors), acts = valid_classifier
    meta = data.draw(mutated(meta))
    tensors = data.draw(damaged_tensors(tensors))
    folder = work / "clf"
    _write_folder(folder, "classifier.json", meta, "classifier.safetensors", tensors)
    clf = clean(load_classifier, folder)
    if clf is not None:  # a classifier that loads also scores and explains
        probabilities = clf.probabilities(acts[:2])
        assert probabilities.shape == (2,)
        clf.describe()
        clf.drivers(pooled_features(acts[:1], clf.dictionary, clf.pools)[0])


# -- SAELens folders -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def valid_saelens(work):
    folder = export_saelens(_sae(), work / "valid-saelens")
    return _folder_files(folder, "cfg.json", "sae_weights.safetensors")


@fuzz(400)
@given(data=st.data())
def test_saelens_folders_load_or_fail_cleanly(work, valid_saelens, data):
    cfg, tensors = valid_saelens
    cfg = data.draw(mutated(cfg))
    tensors = data.draw(damaged_tensors(tensors))
    folder = work / "saelens"
    _write_folder(folder, "cfg.json", cfg, "sae_weights.safetensors", tensors)
    sae = clean(load_saelens, folder, SITE)
    if sae is not None:
        assert torch.isfinite(sae.decode(sae.encode(torch.randn(2, sae.d_in)))).all()


# -- concept specs and dictionary configs (text and image plugins) ---------------------------------
TEXT_SPEC = {"name": "formal", "site": "blocks.10.resid_post", "positive": ["Dear Sir"],
             "negative": ["hey"], "method": "mean-diff", "intensity": 0.3, "template": "{}",
             "description": "d"}
IMAGE_SPEC = {"name": "glasses", "site": "mid", "model": "avatars",
              "positive": {"glasses": "sunglasses"}, "negative": {"glasses": "none"},
              "samples": 4, "seed": 0, "steps": 5, "window": [0.0, 1.0], "intensity": 1.0,
              "region": {"top": 0.0, "bottom": 0.5}}
DICT_CONFIG = {"name": "n", "site": "blocks.3.resid_post", "model": "smollm2",
               "data": {"datasets": ["sms-spam"], "max_texts": 10, "min_chars": 5, "seed": 0},
               "harvest": {"max_tokens": 32, "batch_size": 4},
               "train": {"d_features": 64, "k": 8, "activation": "topk", "lr": 0.001, "steps": 5},
               "save_dtype": "float16"}


@fuzz(300)
@given(data=st.data(), which=st.sampled_from(["text", "image", "dictionary-config"]))
def test_concept_specs_and_dictionary_configs_load_or_fail_cleanly(work, data, which):
    from polysteer.plugins.image.concepts import ImageConceptSpec
    from polysteer.plugins.text.concepts import ConceptSpec
    from polysteer.plugins.text.dictionary import load_config

    valid, load = {"text": (TEXT_SPEC, ConceptSpec.load), "image": (IMAGE_SPEC, ImageConceptSpec.load),
                   "dictionary-config": (DICT_CONFIG, load_config)}[which]
    path = work / f"{which}.yaml"
    path.write_text(_dump_yaml(data.draw(mutated(valid))), encoding="utf-8")
    spec = clean(load, path)
    if spec is not None and which == "dictionary-config":
        spec.store_folder(), spec.output_folder()


# -- data files ------------------------------------------------------------------------------------
@fuzz(400)
@given(suffix=st.sampled_from([".txt", ".csv", ".tsv", ".jsonl"]),
       body=st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "replace"))
       | st.lists(VALUES, max_size=4).map(
           lambda rows: "\n".join(json.dumps(r, default=str) for r in rows).encode()),
       text_column=st.sampled_from(["text", "label", "x"]),
       label_column=st.none() | st.sampled_from(["label", "y"]))
def test_data_files_read_or_fail_cleanly(work, suffix, body, text_column, label_column):
    path = work / f"data{suffix}"
    path.write_bytes(body)
    records = clean(read_local, path, text_column, label_column)
    for record in records or []:
        assert isinstance(record["text"], str) and record["text"].strip()


@fuzz(200)
@given(text=st.text(max_size=200))
def test_raw_json_parses_or_fails_cleanly(work, text):
    path = work / "raw.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    clean(load_json, path)
