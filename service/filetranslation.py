"""A file's texts through the engine: texts longer than one request allows are split, the pieces are packed into
jobs within the request limits, and the translations are put back together in order.

Texts without a letter (numbers, blank runs between formatting changes) are copied without a model call.
Jobs run one after another, each with the longest deadline a request may have (MT_MAX_REQUEST_TIMEOUT_S): a
file is one client's request, however many jobs it takes, and each job holds at most half the batch queue
(estimated: line breaks plus sentence-ending marks), so a large file never fills the queue for everyone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from service.config import Settings
from service.engine import TranslationEngine, TranslationJob

_LETTER = re.compile(r"[^\W\d_]")
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002\uff01\uff1f]+[\"'\u201d\u2019)\]]*\s+")


def has_letters(text: str) -> bool:
    return _LETTER.search(text) is not None


def split_long(text: str, limit: int) -> list[str]:
    """Pieces of at most ``limit`` characters that concatenate to ``text``: cut after the last line break in
    reach, else after the last sentence end, else at the last space, else anywhere (all at least half-way, so
    pieces stay large; else the best cut found)."""
    pieces = []
    while len(text) > limit:
        window = text[:limit]
        sentence_ends = [match.end() for match in _SENTENCE_END.finditer(window)]
        candidates = [window.rfind("\n") + 1, sentence_ends[-1] if sentence_ends else 0, window.rfind(" ") + 1]
        cut = next((c for c in candidates if c >= limit // 2), max(candidates)) or limit
        pieces.append(text[:cut])
        text = text[cut:]
    pieces.append(text)
    return pieces


def estimated_sentences(text: str) -> int:
    return 1 + text.count("\n") + len(_SENTENCE_END.findall(text))


@dataclass
class Plan:
    """What to send (``jobs``: lists of texts) and how to rebuild each unit from the jobs' outputs."""

    units: list[str]
    jobs: list[list[str]] = field(default_factory=list)
    owners: list[int] = field(default_factory=list)  # per piece sent, in order: the unit it belongs to

    def assemble(self, outputs: list[str]) -> list[str]:
        if len(outputs) != len(self.owners):
            raise ValueError(f"{len(self.owners)} pieces sent, {len(outputs)} translations")
        translated: dict[int, list[str]] = {}
        for owner, output in zip(self.owners, outputs):
            translated.setdefault(owner, []).append(output)
        return ["".join(translated[i]) if i in translated else unit for i, unit in enumerate(self.units)]


def plan(units: list[str], settings: Settings) -> Plan:
    result = Plan(list(units))
    budget = max(1, settings.max_queue_sentences // 2)
    texts: list[str] = []
    chars = sentences = 0
    for index, unit in enumerate(units):
        if not has_letters(unit):
            continue
        for piece in split_long(unit, settings.max_text_chars):
            piece_sentences = estimated_sentences(piece)
            if texts and (len(texts) >= settings.max_texts or chars + len(piece) > settings.max_request_chars
                          or sentences + piece_sentences > budget):
                result.jobs.append(texts)
                texts, chars, sentences = [], 0, 0
            texts.append(piece)
            chars += len(piece)
            sentences += piece_sentences
            result.owners.append(index)
    if texts:
        result.jobs.append(texts)
    return result


@dataclass
class Outcome:
    translations: list[str]
    jobs: int = 0
    sentences: int = 0
    models: set[str] = field(default_factory=set)
    queue_ms: float = 0.0  # the longest any sentence waited
    inference_ms: float = 0.0  # summed over the jobs


async def translate_units(engine: TranslationEngine, units: list[str], source: str, target: str, flow: str = "",
                          charge_work: Callable[[int], None] | None = None) -> Outcome:
    """Translate ``units`` from ``source`` (a served code, not auto) to ``target`` for ``flow`` (charging its work
    rate, where it has one); raises the engine's errors."""
    work = plan(units, engine.settings)
    outputs: list[str] = []
    outcome = Outcome([], jobs=len(work.jobs))
    for texts in work.jobs:
        result = await engine.translate(TranslationJob(texts, source, target, flow=flow, charge_work=charge_work,
                                                       timeout_s=engine.settings.max_request_timeout_s))
        outputs += [t.text for t in result.translations]
        outcome.sentences += result.sentences
        outcome.models.update(result.models)
        outcome.queue_ms = max(outcome.queue_ms, result.queue_ms)
        outcome.inference_ms += result.inference_ms
    outcome.translations = work.assemble(outputs)
    return outcome
