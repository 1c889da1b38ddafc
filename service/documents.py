"""Files in, files out: the translatable texts of a .txt, .html, .srt, .docx or .odt file, and the same file
rebuilt around their translations with its structure and styling kept.

``open_document(data, extension)`` reads a file and returns a ``Document``: ``texts`` lists its translatable
units in reading order, ``render(translations)`` writes the file again with each unit replaced. Nothing here
translates or knows about HTTP; a file that is not what its extension says raises ``DocumentError`` naming
the problem (``DocumentTooLarge`` for one over a size limit).

- ``.txt``: the whole text is one unit (the engine keeps every line break and space).
- ``.html``: the text nodes that ``service.htmltext`` marks translatable (the engine's ``format: html``); the
  markup is re-serialized by it, translated text escaped.
- ``.srt``: cue numbers and timestamp lines are kept; a cue's lines are translated as one text and wrapped back
  into as many lines (dialogue lines starting with ``-`` and lines with ``<i>``-style tags one by one).
- ``.docx`` (python-docx) and ``.odt`` (odfdo for the package, lxml for content.xml and styles.xml): in every
  paragraph (body, tables, headers and footers, foot- and endnotes, text boxes), each stretch of text with one
  formatting is a unit. Word and LibreOffice often split text with the same formatting into several runs;
  those are merged (the translation goes into the first, the others are emptied). Where the formatting changes
  inside a sentence (a bold word), the sentence is translated in pieces, as inline HTML tags are: the styling
  survives, fluency suffers there. Tabs, line breaks, fields, notes and images stay where they are.

Files are read in memory. Zip packages are checked before a library opens them: members' unpacked size (the
headers' sizes bound what ``zipfile`` reads), CRCs, and no DTD in any XML member (entities are never expanded).
Text files must be UTF-8 (a BOM is kept) or UTF-16 with a BOM.
"""

from __future__ import annotations

import codecs
import io
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from service import htmltext

MEDIA_TYPES = {
    ".txt": "text/plain",
    ".html": "text/html",
    ".srt": "application/x-subrip",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".odt": "application/vnd.oasis.opendocument.text",
}
EXTENSIONS = tuple(MEDIA_TYPES)  # what /frontend/settings lists as supportedFilesFormat
MAX_ZIP_MEMBERS = 10_000


class DocumentError(ValueError):
    """The file cannot be read as the format its extension names (corrupt, mislabelled, unsupported)."""


class DocumentTooLarge(DocumentError):
    """The file is over a size limit (e.g. a zip package that unpacks to too much)."""


class Document:
    """A file's translatable units (``texts``) and how to write it back with their translations."""

    def __init__(self, texts: list[str], render: Callable[[list[str]], bytes]) -> None:
        self.texts = texts
        self._render = render

    def render(self, translations: list[str]) -> bytes:
        if len(translations) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts, {len(translations)} translations")
        return self._render(translations)


def open_document(data: bytes, extension: str, max_unpacked_bytes: int = 50_000_000) -> Document:
    """Read ``data`` as a file of type ``extension`` (``.txt``, ``.html``, ``.srt``, ``.docx``, ``.odt``)."""
    readers = {".txt": _plain_text, ".html": _html, ".srt": _subrip}
    extension = extension.lower()
    if extension in readers:
        return readers[extension](data)
    if extension == ".docx":
        return _docx(data, max_unpacked_bytes)
    if extension == ".odt":
        return _odt(data, max_unpacked_bytes)
    raise DocumentError(f"file format {extension!r} is not supported (supported: {', '.join(EXTENSIONS)})")


# ---- text formats -------------------------------------------------------------------------------------------------

def _decode(data: bytes, kind: str) -> tuple[str, str]:
    """(text, codec to encode it back with): UTF-8 (BOM kept), or UTF-16 with a BOM."""
    try:
        if data.startswith(codecs.BOM_UTF8):
            text, codec = data.decode("utf-8-sig"), "utf-8-sig"
        elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text, codec = data.decode("utf-16"), "utf-16"
        else:
            text, codec = data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as error:
        raise DocumentError(f"the {kind} file is not UTF-8 text (invalid byte at position {error.start}); "
                            "save it as UTF-8") from None
    if "\x00" in text:
        raise DocumentError(f"the {kind} file holds binary data (NUL characters), not text")
    return text, codec


def _plain_text(data: bytes) -> Document:
    text, codec = _decode(data, ".txt")
    return Document([text], lambda translations: translations[0].encode(codec))


def _html(data: bytes) -> Document:
    text, codec = _decode(data, ".html")
    try:
        document = htmltext.parse(text)
    except (AssertionError, ValueError) as error:
        raise DocumentError(f"the .html file cannot be parsed as HTML: {error}") from None
    return Document(document.texts, lambda translations: document.render(translations).encode(codec))


_CUE_NUMBER = re.compile(r"\s*\d+\s*")
_TIMESTAMP = re.compile(r"\s*\d{1,3}:\d{1,2}:\d{1,2}[,.]\d{1,3}\s*-->\s*\d{1,3}:\d{1,2}:\d{1,2}[,.]\d{1,3}(\s.*)?")
_SUBTITLE_TAG = re.compile(r"(<[^<>]*>|\{[^{}]*\})")  # <i>, </b>, <font color="...">, {\an8}
_DIALOGUE_DASH = re.compile(r"^(\s*[-\u2010-\u2015]\s*)")
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def _subrip(data: bytes) -> Document:
    """SubRip: cues of a number line, a timestamp line and text lines, separated by blank lines."""
    text, codec = _decode(data, ".srt")
    lines = _LINE.findall(text)  # with their endings; only CR, LF and CRLF end a line
    parts: list[Any] = []  # literal strings, and cues: lists of (line text, line ending)
    index = 0
    while index < len(lines):
        if not lines[index].strip():
            parts.append(lines[index])
            index += 1
            continue
        number, stamp = lines[index], lines[index + 1] if index + 1 < len(lines) else ""
        if not _CUE_NUMBER.fullmatch(number.rstrip("\r\n")):
            raise DocumentError(f"the .srt file is not SubRip: line {index + 1} should be a cue number, "
                                f"found {number.strip()[:40]!r}")
        if not _TIMESTAMP.fullmatch(stamp.rstrip("\r\n")):
            raise DocumentError(f"the .srt file is not SubRip: line {index + 2} should be a timestamp line "
                                f"'HH:MM:SS,mmm --> HH:MM:SS,mmm', found {stamp.strip()[:40]!r}")
        parts += [number, stamp]
        index += 2
        cue = []
        while index < len(lines) and lines[index].strip():
            content = lines[index].rstrip("\r\n")
            cue.append((content, lines[index][len(content):]))
            index += 1
        if cue:
            parts.append(cue)

    units: list[str] = []
    builders: list[Callable[[Iterator[str]], str]] = []
    for part in parts:
        if isinstance(part, list):
            builders.append(_cue_builder(part, units))
    if not builders and text.strip():
        raise DocumentError("the .srt file holds no subtitle cue")

    def render(translations: list[str]) -> bytes:
        replacements = iter(translations)
        out, cues = [], iter(builders)
        for part in parts:
            out.append(next(cues)(replacements) if isinstance(part, list) else part)
        return "".join(out).encode(codec)

    return Document(units, render)


def _cue_builder(cue: list[tuple[str, str]], units: list[str]) -> Callable[[Iterator[str]], str]:
    """Adds the cue's units to ``units``; returns how to rebuild the cue from their translations."""
    plain = len(cue) > 1 and not any(_SUBTITLE_TAG.search(c) or _DIALOGUE_DASH.match(c) for c, _ in cue)
    if plain:  # one sentence wrapped over lines: translate it whole, wrap the translation the same way
        original = " ".join(content.strip() for content, _ in cue)
        units.append(original)

        def wrapped(replacements: Iterator[str]) -> str:
            translation = next(replacements)
            rows = _wrap(translation, len(cue)) if translation.strip() else [c for c, _ in cue]
            endings = [ending for _, ending in cue]
            endings = endings[: len(rows) - 1] + endings[-1:]  # fewer rows: the cue still ends as it did
            return "".join(row + ending for row, ending in zip(rows, endings))

        return wrapped
    pieces = []  # per line: [(text, translate?)]
    for content, _ in cue:
        line = []
        dash = _DIALOGUE_DASH.match(content)
        if dash:
            line.append((dash.group(1), False))
            content = content[dash.end():]
        for token in _SUBTITLE_TAG.split(content):
            if token:
                translatable = not _SUBTITLE_TAG.fullmatch(token) and token.strip() != ""
                line.append((token, translatable))
                if translatable:
                    units.append(token)
        pieces.append(line)

    def by_line(replacements: Iterator[str]) -> str:
        out = []
        for line, (content, ending) in zip(pieces, cue):
            row = "".join(next(replacements) if translatable else token for token, translatable in line)
            out.append((row if row.strip() else content) + ending)  # a blank line would end the cue
        return "".join(out)

    return by_line


def _wrap(text: str, rows: int) -> list[str]:
    """``text`` in up to ``rows`` lines of similar length, broken at spaces."""
    words = text.split()
    rows = min(rows, len(words))
    joined = " ".join(words)
    if rows <= 1:
        return [joined]
    spaces = [i for i, ch in enumerate(joined) if ch == " "]
    cuts: list[int] = []
    for k in range(1, rows):
        goal = k * len(joined) / rows
        first = spaces.index(cuts[-1]) + 1 if cuts else 0
        last = len(spaces) - (rows - 1 - k)  # leave a space for each cut still to come
        cuts.append(min(spaces[first:last], key=lambda s: abs(s - goal)))
    starts = [0] + [cut + 1 for cut in cuts]
    ends = cuts + [len(joined)]
    return [joined[start:end] for start, end in zip(starts, ends)]


# ---- zip packages -------------------------------------------------------------------------------------------------

def _check_zip(data: bytes, kind: str, max_unpacked_bytes: int) -> None:
    """Refuse what is not a sound zip package before a library opens it: not a zip, too many members, unpacked
    size over the limit, a member failing its CRC or encrypted, or an XML member declaring a DTD."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        raise DocumentError(f"the {kind} file is not a {kind} document: it is not a zip archive")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            members = package.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise DocumentError(f"the {kind} file has {len(members)} members (at most {MAX_ZIP_MEMBERS})")
            unpacked = sum(member.file_size for member in members)
            if unpacked > max_unpacked_bytes:
                raise DocumentTooLarge(f"the {kind} file unpacks to {unpacked} bytes (at most {max_unpacked_bytes})")
            for member in members:
                if member.flag_bits & 0x1:
                    raise DocumentError(f"the {kind} file is encrypted (member {member.filename[:80]!r})")
                content = package.read(member)  # checks the CRC; bounded by the header's size
                if member.filename.endswith((".xml", ".rels")) and _declares_dtd(content):
                    raise DocumentError(f"the {kind} file's member {member.filename[:80]!r} declares a DTD, which "
                                        "Office documents never do: refused")
    except DocumentError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, RuntimeError, ValueError,
            OSError, EOFError) as error:
        raise DocumentError(f"the {kind} file is a damaged zip archive: {error}") from None


def _declares_dtd(content: bytes) -> bool:
    return any(marker in content for marker in (b"<!DOCTYPE", "<!DOCTYPE".encode("utf-16-le"),
                                                 "<!DOCTYPE".encode("utf-16-be")))


@dataclass
class _Unit:
    """One stretch of text with one formatting: where its pieces live (element, 'text' or 'tail')."""

    key: Any
    places: list[tuple[Any, str]] = field(default_factory=list)

    def text(self) -> str:
        return "".join(getattr(element, where) or "" for element, where in self.places)

    def replace(self, translation: str, set_text: Callable[[Any, str, str], None]) -> None:
        for number, (element, where) in enumerate(self.places):
            set_text(element, where, translation if number == 0 else "")


class _Collector:
    """Groups consecutive text pieces of one key into units; ``cut()`` ends the current unit."""

    def __init__(self) -> None:
        self.units: list[_Unit] = []
        self._open: _Unit | None = None

    def add(self, element: Any, where: str, key: Any) -> None:
        if self._open is None or self._open.key != key:
            self._open = _Unit(key)
            self.units.append(self._open)
        self._open.places.append((element, where))

    def cut(self) -> None:
        self._open = None


# ---- .docx --------------------------------------------------------------------------------------------------------

W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_W_P, _W_R, _W_T, _W_RPR = W + "p", W + "r", W + "t", W + "rPr"
# containers of runs inside a paragraph: their runs belong to it (a link's text is a unit of its own)
_DOCX_CONTAINERS = {W + tag for tag in ("hyperlink", "ins", "moveTo", "smartTag", "sdt", "sdtContent", "fldSimple",
                                        "customXml", "dir", "bdo")}
# markers that neither hold text nor end a stretch of text
_DOCX_TRANSPARENT = {W + tag for tag in ("proofErr", "bookmarkStart", "bookmarkEnd", "permStart", "permEnd",
                                         "commentRangeStart", "commentRangeEnd", "lastRenderedPageBreak", "pPr",
                                         "rPr", "sdtPr", "sdtEndPr")}
# run properties that do not change how text looks (language tags, spell-check flags)
_DOCX_IGNORED_PROPERTIES = {W + tag for tag in ("lang", "noProof")}
_XML_SPACE = "{http://www.w3.org/XML/1998/namespace}space"


def _docx_content_types() -> set[str]:
    from docx.opc.constants import CONTENT_TYPE as CT

    return {CT.WML_DOCUMENT_MAIN, CT.WML_HEADER, CT.WML_FOOTER, CT.WML_FOOTNOTES, CT.WML_ENDNOTES, CT.WML_COMMENTS,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml"}


def _docx(data: bytes, max_unpacked_bytes: int) -> Document:
    import docx
    from docx.opc.constants import CONTENT_TYPE as CT
    from docx.opc.part import PartFactory, XmlPart

    # python-docx keeps foot- and endnotes as opaque blobs; as XML parts their text can be translated too
    PartFactory.part_type_for.setdefault(CT.WML_FOOTNOTES, XmlPart)
    PartFactory.part_type_for.setdefault(CT.WML_ENDNOTES, XmlPart)
    _check_zip(data, ".docx", max_unpacked_bytes)
    try:
        document = docx.Document(io.BytesIO(data))
    except Exception as error:  # python-docx's ways of refusing a package: KeyError, ValueError, lxml errors...
        raise DocumentError(f"the .docx file is not a Word document: {_reason(error)}") from None
    wanted = _docx_content_types()
    collector = _Collector()
    for part in document.part.package.iter_parts():
        if isinstance(part, XmlPart) and part.content_type in wanted:
            for paragraph in part.element.iter(_W_P):
                _docx_paragraph(paragraph, (), collector)
                collector.cut()
    units = [unit for unit in collector.units if unit.text().strip()]

    def set_text(element: Any, where: str, text: str) -> None:
        element.text = text
        if text != text.strip() or "  " in text:
            element.set(_XML_SPACE, "preserve")

    def render(translations: list[str]) -> bytes:
        for unit, translation in zip(units, translations):
            unit.replace(translation, set_text)
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()

    return Document([unit.text() for unit in units], render)


def _docx_paragraph(node: Any, context: tuple, collector: _Collector) -> None:
    """The text of a paragraph, down through runs and run containers (not into nested paragraphs: text boxes
    hold paragraphs of their own, which are visited on their own)."""
    for child in node:
        tag = child.tag
        if not isinstance(tag, str) or tag in _DOCX_TRANSPARENT:
            continue
        if tag == _W_R:
            key = (context, _run_formatting(child))
            for item in child:
                if item.tag == _W_T:
                    collector.add(item, "text", key)
                elif item.tag not in _DOCX_TRANSPARENT:  # tab, break, field character, drawing, note reference...
                    collector.cut()
        elif tag in _DOCX_CONTAINERS:
            link = tag == W + "hyperlink"
            if link:  # a link's text is a unit of its own, even next to a link with the same formatting
                collector.cut()
            _docx_paragraph(child, context + (tag,), collector)
            if link:
                collector.cut()
        else:  # deleted text, math, nested paragraphs, anything unknown: not part of this paragraph's text
            collector.cut()


def _run_formatting(run: Any) -> bytes:
    properties = run.find(_W_RPR)
    if properties is None:
        return b""
    return b"".join(etree.tostring(item) for item in properties if item.tag not in _DOCX_IGNORED_PROPERTIES)


# ---- .odt ---------------------------------------------------------------------------------------------------------

TEXT = "{urn:oasis:names:tc:opendocument:xmlns:text:1.0}"
_ODT_PARAGRAPHS = {TEXT + "p", TEXT + "h"}
_ODT_CONTAINERS = {TEXT + "span", TEXT + "a", TEXT + "meta"}
_ODT_TRANSPARENT = {TEXT + tag for tag in ("soft-page-break", "bookmark", "bookmark-start", "bookmark-end",
                                           "reference-mark", "reference-mark-start", "reference-mark-end", "change",
                                           "change-start", "change-end", "alphabetical-index-mark",
                                           "alphabetical-index-mark-start", "alphabetical-index-mark-end",
                                           "toc-mark", "toc-mark-start", "toc-mark-end")}
_ODT_TEXT_PARTS = ("content.xml", "styles.xml")
ODT_MEDIA_TYPE = MEDIA_TYPES[".odt"]


def _odt(data: bytes, max_unpacked_bytes: int) -> Document:
    from odfdo import Container

    _check_zip(data, ".odt", max_unpacked_bytes)
    try:
        container = Container(io.BytesIO(data))
        media_type = container.get_part("mimetype")
    except Exception as error:  # odfdo's ways of refusing a package: ValueError, KeyError, SecurityError...
        raise DocumentError(f"the .odt file is not an OpenDocument file: {_reason(error)}") from None
    media_type = media_type.decode("ascii", "replace") if isinstance(media_type, bytes) else str(media_type)
    if media_type.strip() != ODT_MEDIA_TYPE:
        raise DocumentError(f"the .odt file is not an OpenDocument text document (its type is {media_type[:80]!r})")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    roots = {}
    collector = _Collector()
    for name in _ODT_TEXT_PARTS:
        if name not in container.parts:
            continue
        try:
            root = etree.fromstring(container.get_part(name), parser)
        except etree.XMLSyntaxError as error:
            raise DocumentError(f"the .odt file's {name} is not well-formed XML: {error}") from None
        roots[name] = root
        for paragraph in root.iter(*_ODT_PARAGRAPHS):
            _odt_paragraph(paragraph, (), collector)
            collector.cut()
    if "content.xml" not in roots:
        raise DocumentError("the .odt file has no content.xml")
    units = [unit for unit in collector.units if unit.text().strip()]

    def render(translations: list[str]) -> bytes:
        for unit, translation in zip(units, translations):
            unit.replace(translation, lambda element, where, text: setattr(element, where, text or None))
        for name, root in roots.items():
            container.set_part(name, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
        out = io.BytesIO()
        container.save(out, packaging="zip")
        return out.getvalue()

    return Document([unit.text() for unit in units], render)


def _odt_paragraph(node: Any, key: tuple, collector: _Collector) -> None:
    """Mixed content of a paragraph: its text, spans and links (descended into), and everything else (spaces,
    tabs, line breaks, fields, notes, frames) as a cut in the text, not descended into."""
    if node.text:
        collector.add(node, "text", key)
    for child in node:
        tag = child.tag
        if isinstance(tag, str) and tag in _ODT_CONTAINERS:
            _odt_paragraph(child, key + ((tag, child.get(TEXT + "style-name"),
                                          child.get("{http://www.w3.org/1999/xlink}href")),), collector)
        elif not isinstance(tag, str) or tag not in _ODT_TRANSPARENT:
            collector.cut()
        if child.tail:
            collector.add(child, "tail", key)


def _reason(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) <= 200 else text[:200] + "..."
