"""Readers for parallel corpora in the formats users have: TSV/CSV, Moses pairs, JSONL and TMX (each may be gzipped).

Every reader yields ``RawPair(location, source, target)``; ``location`` is ``"file:line"`` so that any later
problem (a rejected pair, a bad byte) can be traced back to the input. Every malformed input raises
``CorpusError`` with one message naming the file and the line.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import iterparse

from inference.languages import normalize_code


class CorpusError(RuntimeError):
    """A corpus could not be found, fetched, verified or parsed; the message names the file and line."""


@dataclass(frozen=True)
class RawPair:
    location: str  # "path:line" (TMX: "path:line of the <tu>")
    source: str
    target: str


def open_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzip (by magic number, whatever its name)."""
    if not path.is_file():
        raise CorpusError(f"{path}: file not found")
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise CorpusError(f"{path}: not a readable gzip file ({error})") from error
    return data


def read_lines(path: Path) -> list[str]:
    """Lines of a UTF-8 text file (gzip allowed), without line ends. Invalid UTF-8 names its line."""
    data = open_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    text = []
    for number, raw in enumerate(lines, start=1):
        try:
            text.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise CorpusError(f"{path}:{number}: invalid UTF-8 ({error.reason} at byte {error.start})") from None
    return text


def read_delimited(path: Path, source: str | int, target: str | int, delimiter: str,
                   header: bool) -> Iterator[RawPair]:
    """TSV (no quoting: a quote is text) or CSV (RFC 4180 quoting). Columns by header name or 0-based index.

    A row with another number of fields than the first row is an error ("ragged row").
    """
    lines = read_lines(path)
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO("\n".join(lines)), delimiter=delimiter, quoting=quoting, strict=True)
    width: int | None = None
    columns: tuple[int, int] | None = None
    try:
        for row in reader:
            number = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line
            if width is None:
                width = len(row)
                if header:
                    columns = (_column_index(row, source, path), _column_index(row, target, path))
                    continue
                columns = (_column_index(None, source, path), _column_index(None, target, path))
            if len(row) != width:
                raise CorpusError(f"{path}:{number}: ragged row: {len(row)} fields, expected {width} like line 1")
            assert columns is not None
            if max(columns) >= width:
                raise CorpusError(f"{path}:{number}: column {max(columns)} requested, rows have {width} fields")
            yield RawPair(f"{path}:{number}", row[columns[0]], row[columns[1]])
    except csv.Error as error:
        raise CorpusError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def _column_index(header: list[str] | None, column: str | int, path: Path) -> int:
    if isinstance(column, int):
        return column
    if header is None:
        raise CorpusError(f"{path}: column {column!r} is a name, but the corpus has no header (set header: true)")
    if column not in header:
        raise CorpusError(f"{path}:1: no column named {column!r} in the header {header}")
    return header.index(column)


def read_moses(source_path: Path, target_path: Path) -> Iterator[RawPair]:
    """Two line-aligned plain-text files, one sentence per line."""
    sources, targets = read_lines(source_path), read_lines(target_path)
    if len(sources) != len(targets):
        shorter = source_path if len(sources) < len(targets) else target_path
        raise CorpusError(f"{shorter}:{min(len(sources), len(targets)) + 1}: Moses pair differs in line count: "
                          f"{source_path} has {len(sources)} lines, {target_path} has {len(targets)}")
    for number, (src, tgt) in enumerate(zip(sources, targets), start=1):
        yield RawPair(f"{source_path}:{number}", src, tgt)


def read_jsonl(path: Path, source_key: str, target_key: str) -> Iterator[RawPair]:
    """One JSON object per line, e.g. ``{"de": "...", "en": "..."}``."""
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise CorpusError(f"{path}:{number}: invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise CorpusError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        for key in (source_key, target_key):
            if key not in record:
                raise CorpusError(f"{path}:{number}: no key {key!r} (keys: {sorted(record)[:10]})")
            if not isinstance(record[key], str):
                raise CorpusError(f"{path}:{number}: {key!r} is {type(record[key]).__name__}, expected a string")
        yield RawPair(f"{path}:{number}", record[source_key], record[target_key])


_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_TMX_CODE_ELEMENTS = {"bpt", "ept", "it", "ph", "ut"}  # native markup codes: not text to translate


def _segment_text(seg) -> str:
    """Text of a TMX <seg>: its text and <hi>/<sub> runs, without the inline markup codes."""
    parts = [seg.text or ""]
    for child in seg:
        if child.tag not in _TMX_CODE_ELEMENTS:
            parts.append(_segment_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def read_tmx(path: Path, source_lang: str, target_lang: str) -> Iterator[RawPair]:
    """Translation units of a TMX file holding both languages (``xml:lang``/``lang``; region subtags ignored).

    Parsed with defusedxml: DTDs with entity declarations and external references are refused.
    A file whose units hold neither configured language is an error naming the languages it has.
    """
    data = open_bytes(path)
    units = 0
    seen_languages: set[str] = set()
    try:
        for _, element in iterparse(io.BytesIO(data), events=("end",), forbid_dtd=False,
                                    forbid_entities=True, forbid_external=True):
            if element.tag != "tu":
                continue
            units += 1
            segments: dict[str, str] = {}
            for tuv in element.iter("tuv"):
                lang = tuv.get(_XML_LANG) or tuv.get("lang")
                seg = tuv.find("seg")
                if lang is None or seg is None:
                    continue
                code = normalize_code(lang)
                seen_languages.add(code)
                segments.setdefault(code, _segment_text(seg))
            if source_lang in segments and target_lang in segments:
                yield RawPair(f"{path}:tu {units}", segments[source_lang], segments[target_lang])
            element.clear()
    except DefusedXmlException as error:
        raise CorpusError(f"{path}: refused unsafe XML ({type(error).__name__}: {error})") from None
    except SyntaxError as error:  # xml.etree.ElementTree.ParseError
        line = getattr(error, "position", (0, 0))[0]
        raise CorpusError(f"{path}:{line}: unreadable TMX ({error})") from None
    if units and not {source_lang, target_lang} <= seen_languages:
        raise CorpusError(f"{path}: TMX has languages {sorted(seen_languages)}, "
                          f"the config needs {source_lang} and {target_lang}")
