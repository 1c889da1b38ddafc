"""Glossaries and do-not-translate terms, enforced on the model's output through its attention alignment.

A request's terms are ``Term``s: a source phrase and the target text that must stand for it (a glossary entry's
target term, or for a do-not-translate span, the source span verbatim as it appears in the sentence).

Matching (``find``), on one source sentence:

- case-insensitive (``str.casefold``), on word boundaries (no letter, digit or ``_`` right before or after),
  any run of whitespace between the words of a multi-word term;
- inflection-tolerant for glossary entries whose last word is alphabetic and at least ``MIN_STEM`` letters long:
  that word may carry one of the source language's ``SUFFIXES`` (German ``-e -n -en -er -es -s -ern -ns``,
  English ``-s -es``; others: none), so ``Hund`` matches ``Hunde``/``Hunden`` and ``dog`` matches ``dogs``.
  Stem changes (``Mann`` -> ``Männer``) are not matched: add the form as an entry of its own.
  Do-not-translate spans match exactly (case aside): ``{user}`` never matches ``{users}``;
- longest first: occurrences are taken by decreasing length (equal lengths: the longer term, so an entry for
  ``Hunde`` wins over ``Hund`` + ``-e``), then by position, and one that overlaps an
  occurrence already taken is dropped (``New York City`` wins over ``New York``, and ``York City`` is dropped).

Replacement (``apply``), on the model's translation of that sentence and its word alignment
(``service.alignment``): the longest run of consecutive target words linked to any source word of an occurrence
is replaced by the occurrence's target text; trailing punctuation of the last replaced word is
kept, and a target text that replaces the sentence's first word takes its capital letter. Articles of the
target language (``ARTICLES``) at the start of the run are kept (an article's attention looks at its noun), and
an English ``a``/``an`` before a glossary term is made to fit it. A term the translation already holds (as
whole words; case aside for glossary terms) is left where the model put it. When no target word is
linked to the occurrence, the target word that attends most to it is replaced, if that attention (summed over the
occurrence's source words) is at least ``MIN_FALLBACK_ATTENTION``. Otherwise (or when the words are already
taken by another occurrence), the target text is inserted
after the last target word linked to the nearest preceding source word (before that word's trailing punctuation),
or at the start of the sentence. This is done after the search and after the translation cache, so cached
entries stay the model's own output, and to every n-best hypothesis, each through its own alignment.

Masking (``mask``): the model reads ``PLACEHOLDER`` in place of each do-not-translate occurrence, and the span
comes back through the alignment like a glossary term.

Source words are the whitespace-separated tokens of the sentence; they are the words ``service.alignment``
makes of the SentencePiece pieces (each piece starting with ``▁`` begins one), as long as the tokenizer did not
truncate the sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from service.alignment import WordAlignment

MAX_TERMS = 100  # glossary entries and do-not-translate spans together, per request
MAX_TERM_CHARS = 100  # characters per source or target term
PLACEHOLDER = "X"  # what the model reads in place of a do-not-translate span (see ``mask``)
MIN_FALLBACK_ATTENTION = 0.3  # attention a target word needs on an unlinked occurrence to be replaced by it
MIN_STEM = 3  # letters a glossary entry's last word needs before an inflection suffix is allowed
SUFFIXES: dict[str, tuple[str, ...]] = {
    "de": ("e", "n", "en", "er", "es", "s", "ern", "ns"),
    "en": ("s", "es"),
}
TRAILING_PUNCTUATION = ".,;:!?…\"'»«”’)]"
# Articles of the target language stay out of a replaced run: an article's attention looks at the noun it
# introduces, so it is usually linked to the noun's source word ("Ein Mann" -> "A man": both linked to "Mann").
ARTICLES: dict[str, frozenset[str]] = {
    "en": frozenset({"a", "an", "the"}),
    "de": frozenset({"der", "die", "das", "den", "dem", "des", "ein", "eine", "einen", "einem", "einer", "eines"}),
    "fr": frozenset({"le", "la", "les", "l'", "un", "une", "des", "du"}),
}


@dataclass(frozen=True)
class Term:
    source: str  # the phrase to find in the source sentence
    target: str | None  # glossary: the target term; None: do not translate (copy the matched source span)


@dataclass(frozen=True)
class Occurrence:
    start: int  # character offsets of the match in the sentence
    end: int
    target: str  # what the translation must contain for it
    verbatim: bool = False  # a do-not-translate span: never recapitalized


class GlossaryError(ValueError):
    """A glossary or do-not-translate list that breaks a limit (the API answers 400)."""


def terms_of(glossary: dict[str, str] | None, do_not_translate: list[str] | None) -> tuple[Term, ...]:
    """The request's terms, validated: at most ``MAX_TERMS`` together, each non-blank and at most
    ``MAX_TERM_CHARS`` characters. Raises ``GlossaryError`` naming the first offending entry."""
    glossary, do_not_translate = glossary or {}, do_not_translate or []
    if len(glossary) + len(do_not_translate) > MAX_TERMS:
        raise GlossaryError(f"glossary and do_not_translate hold {len(glossary) + len(do_not_translate)} entries "
                            f"together (at most {MAX_TERMS})")
    terms = []
    for source, target in glossary.items():
        _check(source, f"glossary source term {source[:40]!r}")
        _check(target, f"glossary target term for {source[:40]!r}")
        terms.append(Term(" ".join(source.split()), " ".join(target.split())))
    for index, span in enumerate(do_not_translate):
        _check(span, f"do_not_translate entry {index}")
        terms.append(Term(" ".join(span.split()), None))
    return tuple(terms)


def _check(text: str, what: str) -> None:
    if not text.strip():
        raise GlossaryError(f"{what} is empty")
    if len(text) > MAX_TERM_CHARS:
        raise GlossaryError(f"{what} has {len(text)} characters (at most {MAX_TERM_CHARS})")


def pattern(term: Term, language: str | None) -> re.Pattern[str]:
    """The regular expression that finds ``term`` in a sentence of ``language`` (see the module docstring)."""
    words = [re.escape(word) for word in term.source.split()]
    last = term.source.split()[-1]
    if term.target is not None and last.isalpha() and len(last) >= MIN_STEM and SUFFIXES.get(language or ""):
        suffixes = sorted(SUFFIXES[language or ""], key=len, reverse=True)
        words[-1] += "(?:" + "|".join(suffixes) + ")?"
    return re.compile(r"(?<![\w])" + r"\s+".join(words) + r"(?![\w])", re.IGNORECASE)


def find(sentence: str, terms: tuple[Term, ...], language: str | None) -> list[Occurrence]:
    """Non-overlapping occurrences of ``terms`` in ``sentence``, longest first, returned in sentence order."""
    candidates = []
    for term in terms:
        for match in pattern(term, language).finditer(sentence):
            target = match.group() if term.target is None else term.target
            candidates.append((Occurrence(match.start(), match.end(), target, term.target is None), len(term.source)))
    # Longest match first; among equally long ones, the longer term (an exact form over a stem plus a suffix).
    candidates.sort(key=lambda c: (c[0].start - c[0].end, -c[1], c[0].start))
    taken: list[Occurrence] = []
    for occurrence, _ in candidates:
        if all(occurrence.end <= other.start or other.end <= occurrence.start for other in taken):
            taken.append(occurrence)
    return sorted(taken, key=lambda o: o.start)


def mask(sentence: str, occurrences: list[Occurrence]) -> tuple[str, list[Occurrence]]:
    """The sentence the model reads: each do-not-translate occurrence replaced by ``PLACEHOLDER``, and the
    occurrences at their offsets in it. A span such as ``{user}`` or ``XR-200`` is mostly pieces the model
    never saw together and disturbs the whole translation; one capital letter disturbs it least of the
    placeholders tried (measured in docs/service.md). The span itself comes back through the alignment."""
    out: list[str] = []
    moved: list[Occurrence] = []
    position = shift = 0
    for o in occurrences:
        out.append(sentence[position : o.start])
        text = PLACEHOLDER if o.verbatim else sentence[o.start : o.end]
        moved.append(Occurrence(o.start + shift, o.start + shift + len(text), o.target, o.verbatim))
        out.append(text)
        shift += len(text) - (o.end - o.start)
        position = o.end
    out.append(sentence[position:])
    return "".join(out), moved


def only_verbatim(sentence: str, occurrences: list[Occurrence]) -> bool:
    """Is ``sentence`` nothing but do-not-translate spans, whitespace and punctuation? (then it is copied as is)"""
    rest, position = [], 0
    for o in occurrences:
        if o.verbatim:
            rest.append(sentence[position : o.start])
            position = o.end
    rest.append(sentence[position:])
    return position > 0 and not any(character.isalnum() for character in "".join(rest))


def source_word_spans(sentence: str) -> list[tuple[int, int]]:
    """Character spans of the sentence's whitespace-separated words: the source words of the alignment."""
    return [match.span() for match in re.finditer(r"\S+", sentence)]


def apply(sentence: str, occurrences: list[Occurrence], alignment: WordAlignment, target_language: str | None = None,
          scores: np.ndarray | None = None) -> str:
    """The translation (``alignment.target_words`` joined with spaces) with every occurrence's target text put in
    place of the target words aligned to it. ``alignment`` is the model's alignment of ``sentence``; ``scores``
    [len(target_words), len(source_words)] its word-level attention (default: ``alignment.scores``), used when no
    target word is linked to an occurrence."""
    scores = alignment.scores if scores is None else scores
    words = list(alignment.target_words)
    occurrences = _missing(occurrences, " ".join(words))
    articles = ARTICLES.get(target_language or "", frozenset())
    spans = source_word_spans(sentence)
    linked: dict[int, list[int]] = {}  # source word -> its target words, ascending
    for source_word, target_word in alignment.links:
        linked.setdefault(source_word, []).append(target_word)
    sources = [[i for i, (start, end) in enumerate(spans) if start < o.end and o.start < end] for o in occurrences]
    # First the replacements: each occurrence's longest run of consecutive target words linked to it.
    plans: list[tuple[int, int, Occurrence]] = []
    taken: dict[int, int] = {}  # target word -> the last word of the replaced run holding it
    unplaced = []
    for occurrence, source_words in zip(occurrences, sources):
        run = _longest_run(sorted(t for i in source_words for t in linked.get(i, [])))
        seen = [i for i in source_words if scores is not None and i < scores.shape[1]]  # the model may truncate
        if run is None and scores is not None and seen:  # no row links it: the target word most attending to it
            mass = scores[:, seen].sum(axis=1)  # [Tw]
            best = int(mass.argmax()) if len(mass) else -1
            run = (best, best) if best >= 0 and mass[best] >= MIN_FALLBACK_ATTENTION else None
        while run is not None and run[0] < run[1] and _is_article(words[run[0]], articles, occurrence):
            run = (run[0] + 1, run[1])
        if run is None or any(t in taken for t in range(run[0], run[1] + 1)):
            unplaced.append((occurrence, source_words))
            continue
        plans.append((run[0], run[1], occurrence))
        taken.update((t, run[1]) for t in range(run[0], run[1] + 1))
    # Then insertions, after the target words of the nearest preceding source word that has any.
    for occurrence, source_words in unplaced:
        before = min(source_words, default=len(spans))
        anchor = next((max(linked[i]) for i in range(before - 1, -1, -1) if linked.get(i)), -1)
        anchor = taken.get(anchor, anchor)  # not inside a replaced run: after it
        plans.append((anchor + 1, anchor, occurrence))
    return _rebuild(words, plans, target_language)


def _missing(occurrences: list[Occurrence], translation: str) -> list[Occurrence]:
    """The occurrences still to put in place: a target text the translation already holds (as whole words, case
    aside for glossary terms) as often as the sentence has occurrences of it is left where the model put it."""
    keep = []
    for occurrence in occurrences:
        same = [o for o in occurrences if o.target == occurrence.target]
        flags = 0 if occurrence.verbatim else re.IGNORECASE
        found = len(re.findall(r"(?<![\w])" + re.escape(occurrence.target) + r"(?![\w])", translation, flags))
        if found < len(same):
            keep.append(occurrence)
    return keep


def _is_article(word: str, articles: frozenset[str], occurrence: Occurrence) -> bool:
    """Is ``word`` an article to keep before ``occurrence``'s target text (which does not start with one)?"""
    first = occurrence.target.split()[0].lower()
    return _split_punctuation(word)[0].lower() in articles and first not in articles


def _longest_run(indices: list[int]) -> tuple[int, int] | None:
    """[1, 2, 3, 7] -> (1, 3): the longest run of consecutive integers in sorted ``indices`` (the first of equals)."""
    best: tuple[int, int] | None = None
    start = None
    for position, value in enumerate(indices):
        if start is None or value > indices[position - 1] + 1:
            start = value
        if best is None or value - start > best[1] - best[0]:
            best = (start, value)
    return best


def _rebuild(words: list[str], plans: list[tuple[int, int, Occurrence]], language: str | None = None) -> str:
    """Target words with the planned replacements (words [first, last] -> the occurrence's target) and insertions
    (first = last + 1: before word ``first``, the trailing punctuation of word ``last`` moved after them)."""
    replace = {first: (last, occurrence) for first, last, occurrence in plans if first <= last}
    insert: dict[int, list[str]] = {}
    for first, last, occurrence in plans:
        if first > last:
            insert.setdefault(first, []).append(occurrence.target)
    out: list[str] = []
    index = 0
    while index <= len(words):
        if index in insert:
            texts = insert[index]
            core, punctuation = _split_punctuation(out[-1]) if out else ("", "")
            if core:
                out[-1] = core
                texts = texts[:-1] + [texts[-1] + punctuation]
            out.extend(texts)
        if index == len(words):
            break
        if index in replace:
            last, occurrence = replace[index]
            text = occurrence.target
            if index == 0 and not occurrence.verbatim and words[0][:1].isupper() and text[:1].islower():
                text = text[:1].upper() + text[1:]  # the sentence's capital letter
            _, punctuation = _split_punctuation(words[last])
            if language == "en" and not occurrence.verbatim and out and out[-1].lower() in ("a", "an"):
                article = "an" if text[:1].lower() in "aeiou" else "a"  # "a car" -> "an automobile"
                out[-1] = article.capitalize() if out[-1][:1].isupper() else article
            out.append(text if text.endswith(punctuation) else text + punctuation)
            index = last + 1
        else:
            out.append(words[index])
            index += 1
    return " ".join(out)


def _split_punctuation(word: str) -> tuple[str, str]:
    """``"dog.\""`` -> ``("dog", ".\"")``: a word and its trailing punctuation."""
    core = word.rstrip(TRAILING_PUNCTUATION)
    return core, word[len(core):]
