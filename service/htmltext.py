"""HTML in, HTML out: the text nodes are translated, the markup is kept.

The input is parsed with the standard library's HTML parser (a tokenizer that follows the HTML syntax,
decoding character references) and the output is re-serialized from the parsed tokens: tags and
attributes are written back with every attribute value quoted and escaped, and translated text is always
escaped. So a translation can never turn into markup, whatever the model writes, and entities such as
``&lt;script&gt;`` in the input stay text. The service does not sanitize the client's own markup: tags
the client sent (scripts included) come back as they were.

Text inside script, style, code, pre, textarea and elements marked ``translate="no"`` or
``class="notranslate"`` is copied, not translated. Where the standard parser departs from browsers, this
module follows browsers (checked against html5lib in the tests): ``<script/>`` and other self-closed
non-void elements open an element, and attribute values keep ``&section=2``-style text in URLs. Each text node is translated on its own, so inline
tags split a sentence (``ein <b>großer</b> Hund`` is three texts): the markup survives, fluency suffers.
"""

from __future__ import annotations

import html
import html.parser
import re
from dataclasses import dataclass, field
from html.entities import html5 as NAMED_REFERENCES
from html.parser import HTMLParser

VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                           "source", "track", "wbr"})
RAW_TEXT_ELEMENTS = frozenset({"script", "style"})  # the parser hands their content over unparsed
_SECTION_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*")
FOREIGN_ELEMENTS = frozenset({"svg", "math"})  # inside them "<x/>" really is self-closing
_CHARACTER_REFERENCE = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")
UNTRANSLATED_ELEMENTS = RAW_TEXT_ELEMENTS | frozenset({"code", "pre", "kbd", "samp", "var", "textarea", "noscript",
                                                       "template", "svg", "math"})


@dataclass
class HtmlDocument:
    """Alternating markup and text: ``parts[i]`` is final markup, or a text node when ``i in texts``."""

    parts: list[str] = field(default_factory=list)
    text_index: list[int] = field(default_factory=list)  # indexes into parts of the translatable text nodes

    @property
    def texts(self) -> list[str]:
        return [self.parts[i] for i in self.text_index]

    def render(self, translations: list[str]) -> str:
        """The document with its text nodes replaced, in order, by ``translations`` (escaped)."""
        if len(translations) != len(self.text_index):
            raise ValueError(f"{len(self.text_index)} text nodes, {len(translations)} translations")
        parts = list(self.parts)
        for index, text in zip(self.text_index, translations):
            parts[index] = html.escape(text, quote=False)
        return "".join(parts)


class _Splitter(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.document = HtmlDocument()
        self._open: list[tuple[str, bool]] = []  # (tag, translatable) of the open elements

    @property
    def _translatable(self) -> bool:
        return not self._open or self._open[-1][1]

    @property
    def _after_text(self) -> bool:
        return bool(self.document.text_index) and self.document.text_index[-1] == len(self.document.parts) - 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attrs = self._raw_attributes(attrs)
        self._markup(f"<{tag}{_attributes(attrs)}>")
        if tag in VOID_ELEMENTS:
            return
        values = dict(attrs)
        opted_out = ((values.get("translate") or "").lower() == "no"
                     or "notranslate" in (values.get("class") or "").split())
        self._open.append((tag, self._translatable and tag not in UNTRANSLATED_ELEMENTS and not opted_out))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """``<x/>``: browsers ignore the slash on HTML elements that are not void (``<script/>``,
        ``<textarea/>``, ``<span translate="no"/>`` open an element), so this parser does too."""
        if tag in VOID_ELEMENTS or any(open_tag in FOREIGN_ELEMENTS for open_tag, _ in self._open):
            self._markup(f"<{tag}{_attributes(self._raw_attributes(attrs))} />")
            return
        self.handle_starttag(tag, attrs)
        if tag in self.CDATA_CONTENT_ELEMENTS:
            self.set_cdata_mode(tag)

    def _raw_attributes(self, parsed: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
        """The start tag's attributes decoded by the HTML rules for attribute values, which differ from the
        rules for text that the standard parser applies: ``&section=2`` in a URL stays as written."""
        raw = self.get_starttag_text() or ""
        match = html.parser.tagfind_tolerant.match(raw, 1)
        if match is None:
            return parsed
        attrs: list[tuple[str, str | None]] = []
        position = match.end()
        while attribute := html.parser.attrfind_tolerant.match(raw, position):
            name, rest, value = attribute.group(1, 2, 3)
            if not rest:
                value = None
            elif value[:1] == "'" == value[-1:] or value[:1] == '"' == value[-1:]:
                value = value[1:-1]
            attrs.append((name.lower(), unescape_attribute(value) if value else value))
            position = attribute.end()
        return attrs if len(attrs) == len(parsed) else parsed

    def handle_endtag(self, tag: str) -> None:
        self._markup(f"</{tag}>")
        if any(open_tag == tag for open_tag, _ in self._open):  # unbalanced end tags are tolerated
            while self._open.pop()[0] != tag:
                pass

    def handle_data(self, data: str) -> None:
        open_tag = self._open[-1][0] if self._open else None
        if open_tag in RAW_TEXT_ELEMENTS:
            self._markup(data)  # script/style source: already in its serialized form
        elif self._translatable and self._after_text:
            self.document.parts[-1] += data  # the parser hands one text over in chunks (e.g. around a bare "<")
        elif self._translatable and data.strip():
            self.document.text_index.append(len(self.document.parts))
            self.document.parts.append(data)
        else:
            self._markup(html.escape(data, quote=False))

    def handle_comment(self, data: str) -> None:
        self._markup(f"<!--{data}-->")

    def handle_decl(self, decl: str) -> None:
        self._markup(f"<!{decl}>")

    def handle_pi(self, data: str) -> None:
        self._markup(f"<?{data}>")

    def unknown_decl(self, data: str) -> None:
        # A marked section: the parser hands over what lies between "<![" and its close, which is "]]>" for
        # CDATA-like sections and "]>" for conditional comments (<![if !IE]>).
        name = _SECTION_NAME.match(data)
        close = "]>" if name and name.group().lower() in ("if", "else", "endif") else "]]>"
        self._markup(f"<![{data}{close}")

    def parse_marked_section(self, i: int, report: int = 1) -> int:
        """The standard parser raises AssertionError on a marked section it does not know (``<![foo]>``);
        browsers read one as a bogus comment up to the next ``>``, and so does this parser (copied as is)."""
        try:
            return super().parse_marked_section(i, report)
        except AssertionError:
            end = self.rawdata.find(">", i + 3)
            if end < 0:
                return -1  # incomplete: the parser keeps it for later, or hands it over as text at the end
            if report:
                self._markup(self.rawdata[i : end + 1])
            return end + 1

    def _markup(self, text: str) -> None:
        self.document.parts.append(text)


def unescape_attribute(value: str) -> str:
    """Decode character references in an attribute value as HTML5 does: a named reference without ``;``
    followed by a letter, digit or ``=`` is left as written (``?a=1&section=2`` keeps ``&section``)."""
    def replace(match: re.Match) -> str:
        reference = match.group(1)
        if reference.startswith("#"):
            return html.unescape(match.group(0))
        if reference in NAMED_REFERENCES:  # a complete name with its ";"
            return NAMED_REFERENCES[reference]
        for length in range(len(reference), 0, -1):  # the longest legacy name it starts with
            name = reference[:length]
            if name in NAMED_REFERENCES:
                rest = reference[length:]
                if rest[:1].isalnum() or rest[:1] == "=":
                    return match.group(0)
                return NAMED_REFERENCES[name] + rest
        return match.group(0)

    return _CHARACTER_REFERENCE.sub(replace, value)


def _attributes(attrs: list[tuple[str, str | None]]) -> str:
    return "".join(f" {name}" if value is None else f' {name}="{html.escape(value, quote=True)}"'
                   for name, value in attrs)


def parse(markup: str) -> HtmlDocument:
    """An HTML fragment or document -> its markup and translatable text nodes (text decoded, e.g. &amp; -> &)."""
    splitter = _Splitter()
    splitter.feed(markup)
    splitter.close()
    return splitter.document
