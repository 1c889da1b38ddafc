"""HTML in, HTML out: the text nodes are translated, the markup is kept.

The input is parsed with the standard library's HTML parser (a tokenizer that follows the HTML syntax,
decoding character references) and the output is re-serialized from the parsed tokens: tags and
attributes are written back with every attribute value quoted and escaped, and translated text is always
escaped. So a translation can never turn into markup, whatever the model writes, and entities such as
``&lt;script&gt;`` in the input stay text. The service does not sanitize the client's own markup: tags
the client sent (scripts included) come back as they were.

Text inside script, style, code, pre, textarea and elements marked ``translate="no"`` or
``class="notranslate"`` is copied, not translated. Each text node is translated on its own, so inline
tags split a sentence (``ein <b>großer</b> Hund`` is three texts): the markup survives, fluency suffers.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID_ELEMENTS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                           "source", "track", "wbr"})
RAW_TEXT_ELEMENTS = frozenset({"script", "style"})  # the parser hands their content over unparsed
_SECTION_NAME = re.compile(r"[a-zA-Z][-_.a-zA-Z0-9]*")
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
        self._markup(f"<{tag}{_attributes(attrs)}>")
        if tag in VOID_ELEMENTS:
            return
        values = dict(attrs)
        opted_out = ((values.get("translate") or "").lower() == "no"
                     or "notranslate" in (values.get("class") or "").split())
        self._open.append((tag, self._translatable and tag not in UNTRANSLATED_ELEMENTS and not opted_out))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._markup(f"<{tag}{_attributes(attrs)} />")

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


def _attributes(attrs: list[tuple[str, str | None]]) -> str:
    return "".join(f" {name}" if value is None else f' {name}="{html.escape(value, quote=True)}"'
                   for name, value in attrs)


def parse(markup: str) -> HtmlDocument:
    """An HTML fragment or document -> its markup and translatable text nodes (text decoded, e.g. &amp; -> &)."""
    splitter = _Splitter()
    splitter.feed(markup)
    splitter.close()
    return splitter.document
