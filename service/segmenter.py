"""Split a text into sentences and the exact whitespace between them, so translations rejoin losslessly.

``segment(text)`` returns pieces whose texts concatenate back to ``text`` exactly. Pieces marked
``translate`` are single sentences (no newline inside, no surrounding whitespace, at least one letter);
everything else (whitespace, paragraph breaks, bare numbers or punctuation) is copied to the output as is.
The models were trained on single sentences, so a paragraph is translated sentence by sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Words that end with a period without ending the sentence (compared lowercased, without the period).
ABBREVIATIONS: dict[str, frozenset[str]] = {
    "en": frozenset({"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "no", "fig", "approx", "dept", "mt"}),
    "de": frozenset({"nr", "bzw", "ca", "dr", "prof", "hr", "fr", "evtl", "ggf", "inkl", "vgl", "st", "str", "bspw",
                     "sog", "usw", "etc", "abs", "geb", "jh", "mio", "mrd", "ff", "tel"}),
    "fr": frozenset({"m", "mme", "mlle", "dr", "pr", "env", "cf", "mr", "st", "ste", "no", "tél"}),
}
_ALL_ABBREVIATIONS = frozenset().union(*ABBREVIATIONS.values())

# A candidate boundary: sentence-final punctuation, optional closing quotes/brackets, whitespace,
# then something that can start a sentence. Every pattern here runs in linear time on any input: a match
# never starts inside a run it could have started before (lookbehind), and runs are taken possessively,
# so a run of 5,000 dots or spaces is scanned once, not once per position.
_BOUNDARY = re.compile(r"(?<![.!?…])([.!?…]++[\"'»«”’)\]]*+)(\s++)(?=\S)")
_OPENERS = "\"'«»„“‘([¿¡"
_LINE_BREAK = re.compile(r"(?<![^\S\n])[^\S\n]*+\n\s*")
_CUT_AFTER = re.compile(r"[,;:]\s")
_LONGEST_ABBREVIATION = 64  # characters of the previous word that decide whether a period is an abbreviation


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool


def segment(text: str, language: str | None = None, max_sentence_chars: int = 400) -> list[Piece]:
    """text -> pieces (sentences to translate and separators to keep) that concatenate back to ``text``."""
    pieces: list[Piece] = []
    position = 0
    for match in _LINE_BREAK.finditer(text):
        _segment_line(text[position : match.start()], language, max_sentence_chars, pieces)
        _append(pieces, match.group(), False)
        position = match.end()
    _segment_line(text[position:], language, max_sentence_chars, pieces)
    return pieces


def join(pieces: list[Piece], translations: list[str]) -> str:
    """Pieces with each ``translate`` piece replaced, in order, by the next of ``translations``."""
    replacements = iter(translations)
    out = [next(replacements) if piece.translate else piece.text for piece in pieces]
    if next(replacements, None) is not None:
        raise ValueError("more translations than sentences")
    return "".join(out)


def keep_together(pieces: list[Piece], spans: list[tuple[int, int]]) -> list[Piece]:
    """Merge the pieces that a character span of their text (a do-not-translate or glossary term) runs across,
    so no term is split between two sentences; a merge that would put a line break inside a sentence is skipped."""
    if not spans or len(pieces) < 2:
        return pieces
    ends = []
    position = 0
    for piece in pieces:
        position += len(piece.text)
        ends.append(position)
    merged: list[Piece] = []
    start = 0
    for piece, end in zip(pieces, ends):
        if merged and any(s < start < e for s, e in spans) and "\n" not in merged[-1].text + piece.text:
            text = merged[-1].text + piece.text
            merged[-1] = Piece(text, any(character.isalpha() for character in text))
        else:
            merged.append(piece)
        start = end
    return merged


def sentences(pieces: list[Piece]) -> list[str]:
    return [piece.text for piece in pieces if piece.translate]


def _segment_line(line: str, language: str | None, max_chars: int, pieces: list[Piece]) -> None:
    """One line (no newline inside) -> leading space, sentences with the spaces between them, trailing space."""
    stripped = line.strip()
    if not stripped:
        _append(pieces, line, False)
        return
    start = line.index(stripped[0])
    _append(pieces, line[:start], False)
    body = line[start : start + len(stripped)]
    position = 0
    for match in _BOUNDARY.finditer(body):
        sentence_end = match.start(2)
        if not _starts_sentence(body, match.end()) or _is_abbreviation(body, position, match.end(1), language):
            continue
        _append_sentence(body[position:sentence_end], max_chars, pieces)
        _append(pieces, match.group(2), False)
        position = match.end()
    _append_sentence(body[position:], max_chars, pieces)
    _append(pieces, line[start + len(stripped) :], False)


def _starts_sentence(text: str, start: int) -> bool:
    """Can a sentence start at ``text[start]``? (an upper-case letter or a digit, maybe after opening quotes)"""
    while start < len(text) and text[start] in _OPENERS:
        start += 1
    first = text[start : start + 1]
    return first.isupper() or first.isdigit()


def _is_abbreviation(text: str, sentence_start: int, end: int, language: str | None) -> bool:
    """Does the sentence ``text[sentence_start:end]`` (ending in its candidate final punctuation) end with an
    abbreviation, not a full stop? Only the last word is read, so the cost does not grow with the sentence."""
    if text[end - 1 : end] != ".":
        return False
    tail = text[max(sentence_start, end - 1 - _LONGEST_ABBREVIATION) : end - 1]
    if not tail or tail[-1].isspace():
        return False
    token = tail.split()[-1].lstrip("\"'«»„“‘([").lower()
    if len(token) == 1 and token.isalpha():  # initials and "z. B.", "d. h."
        return True
    if "." in token:  # "e.g", "z.B", "U.S"
        return True
    if language == "de" and token.isdigit():  # German ordinals: "am 3. Oktober"
        return True
    known = ABBREVIATIONS.get(language or "", _ALL_ABBREVIATIONS)
    return token in known


def _append_sentence(sentence: str, max_chars: int, pieces: list[Piece]) -> None:
    """A sentence longer than ``max_chars`` is cut at spaces (after , ; : where possible) into several."""
    while len(sentence) > max_chars:
        window = sentence[:max_chars]
        cut = max((m.start() + 1 for m in _CUT_AFTER.finditer(window)), default=-1)
        if cut < max_chars // 2:
            cut = window.rfind(" ")
        head = sentence[:cut].rstrip() if cut > 0 else ""
        if not head:  # no space to cut at: cut inside the word
            head = window
        rest = sentence[len(head) :]
        sentence = rest.lstrip()
        _append(pieces, head, True)
        _append(pieces, rest[: len(rest) - len(sentence)], False)
    _append(pieces, sentence, True)


def _append(pieces: list[Piece], text: str, translate: bool) -> None:
    if not text:
        return
    translate = translate and any(character.isalpha() for character in text)
    if not translate and pieces and not pieces[-1].translate:
        pieces[-1] = Piece(pieces[-1].text + text, False)  # merge neighbouring separators
        return
    pieces.append(Piece(text, translate))
