"""Texts in, translations out: language resolution, sentence splitting, HTML, batching, reassembly.

The engine owns the loaded models, the language detector and the dynamic batcher. ``translate`` is a
coroutine (it waits on the batcher without blocking the event loop); the HTTP API and the CLI both call it.
Nothing here knows about HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from inference import languages
from inference.language_id import Detection, LanguageDetector, known_languages
from inference.search import Hypothesis, SearchOptions, StepModel, search
from inference.translator import Translation
from service import glossary, htmltext
from service.alignment import align
from service.batcher import BatcherStopped, BatchLimits, BatchStats, DeadlineExceeded, DynamicBatcher, QueueFull
from service.cache import TranslationCache, cache_key
from service.config import Settings
from service.errors import BadModelOutput, InvalidJob, JobTimeout, NotReady, Overloaded, ShuttingDown
from service.metrics import Metrics
from service.registry import LoadedModel, ModelRegistry, VerifiedModel, load_models, verify_models
from service.scheduler import ContinuousBatcher, SchedulerLimits, work
from service.segmenter import Piece, join, keep_together, segment

log = logging.getLogger(__name__)

INLINE_PREPARATION_CHARS = 2000  # larger jobs are split and tokenized on a worker thread
INLINE_FINISH_SENTENCES = 64  # larger jobs are detokenized and assessed on a worker thread


@dataclass(frozen=True)
class TranslationJob:
    """One request's worth of work. ``source`` may be ``"auto"``; None options take the defaults."""

    texts: list[str]
    source: str
    target: str
    format: Literal["text", "html"] = "text"
    beam_size: int | None = None
    n_best: int = 1
    return_attention: bool = False
    timeout_s: float | None = None
    terms: tuple[glossary.Term, ...] = ()  # glossary entries and do-not-translate spans (service.glossary)
    flow: str = ""  # who is asking (API key or client): the scheduler shares the decoder fairly between flows
    confidence: bool = False  # compute each sentence's calibrated confidence (else it is None)
    # Charges the work about to be decoded (source tokens x beam size) to the caller's rate limit; may raise
    # RateLimited. Set by the API for requests with an API key.
    charge_work: Callable[[int], None] | None = field(default=None, compare=False)

    @property
    def decode_attention(self) -> bool:
        """Decode with attention: asked for, or needed to put the terms in place."""
        return self.return_attention or bool(self.terms)


@dataclass
class SentenceTranslation:
    """One source sentence and its best translation; ``weights`` [len(target_tokens), len(source_tokens)]."""

    source: str
    text: str
    score: float
    source_tokens: list[str]
    target_tokens: list[str]
    weights: np.ndarray | None = None
    confidence: float | None = None  # None when the model has no confidence calibration
    model_text: str | None = None  # the model's own output, when glossary terms changed it into ``text``

    @property
    def decoded_text(self) -> str:
        """What the model produced: the text ``target_tokens`` and ``weights`` describe."""
        return self.text if self.model_text is None else self.model_text


@dataclass
class TextTranslation:
    text: str
    score: float | None  # mean of the sentences' scores; None when nothing needed translating
    alternatives: list[tuple[str, float | None]]  # n-best beyond the first, duplicates removed
    sentences: list[SentenceTranslation]
    source_language: str
    model_id: str | None
    detected: Detection | None = None
    confidence: float | None = None  # lowest sentence confidence of the best variant; None: none to give


@dataclass
class JobResult:
    translations: list[TextTranslation]
    models: list[str]
    sentences: int  # distinct sentences translated (decoded or from the cache)
    queue_ms: float = 0.0  # longest wait of any of its sentences before decoding started
    inference_ms: float = 0.0  # wall time during which any of its sentences was being decoded
    cache_hits: int = 0  # of ``sentences``, those answered from the cache


@dataclass
class _TextPlan:
    """How one text is rebuilt: its units (the text, or the HTML text nodes), each split into pieces.
    ``model`` None: the text is already in the target language and is returned as it is."""

    text: str
    source_language: str
    detected: Detection | None
    model: LoadedModel | None
    document: htmltext.HtmlDocument | None
    units: list[list[Piece]] = field(default_factory=list)


class TranslationEngine:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.registry: ModelRegistry | None = None
        self.detector: LanguageDetector | None = None
        self.status = "starting"  # starting -> ready | failed; ready -> stopping
        self.failure: str | None = None
        self.batcher: DynamicBatcher | ContinuousBatcher
        if settings.scheduler == "continuous":
            self.batcher = ContinuousBatcher(
                self._step_model,
                SchedulerLimits(max_rows=settings.max_active_rows, max_tokens=settings.max_active_tokens,
                                max_queue_work=settings.max_queue_work, bulk_sentences=settings.bulk_request_sentences,
                                shared_bulk_rows=settings.shared_bulk_rows, min_retry_after_s=settings.retry_after_s),
                self.metrics)
        else:
            self.batcher = DynamicBatcher(
                self._run_batch,
                BatchLimits(max_sentences=settings.max_batch_sentences, max_tokens=settings.max_batch_tokens,
                            max_wait_s=settings.max_wait_ms / 1000, max_queue=settings.max_queue_sentences,
                            min_retry_after_s=settings.retry_after_s),
                self.metrics)
        self.cache = TranslationCache(settings.cache_size, settings.cache_max_mb << 20, self.metrics)

    # ---- life cycle -------------------------------------------------------------------------------------------

    def verify(self) -> tuple[list[VerifiedModel], dict[str, str]]:
        """Fast start-up check (cards and checksums); raises ``ModelLoadError`` naming the broken file."""
        return verify_models(self.settings)

    def load(self, verified: list[VerifiedModel], broken: dict[str, str] | None = None) -> None:
        """Sessions, warm-up, language detector, batcher; then ready. Slow: run it off the event loop."""
        try:
            registry = load_models(verified, self.settings, broken)
            known = [code for code in registry.source_languages if _detectable(code)]
            self.detector = LanguageDetector(known) if known else None
        except Exception as error:
            self.status, self.failure = "failed", str(error)
            raise
        self.registry = registry
        for model in registry.models.values():
            architecture = model.card.architecture
            self.metrics.model_info.labels(
                model.id, model.source, model.target,
                f"{architecture.get('type', '?')}/{architecture.get('cell', '?')}",
                "int8" if model.quantized else "fp32", model.providers[0]).set(1)
        self.batcher.start()
        self.status = "ready"
        self.metrics.ready.set(1)

    def start(self) -> None:
        """Verify and load in one go (the CLI's path)."""
        self.load(*self.verify())

    def stop(self) -> None:
        """Finish queued work (up to the shutdown timeout) and stop the worker."""
        if self.status == "ready":
            self.status = "stopping"
        self.metrics.ready.set(0)
        self.batcher.stop(self.settings.shutdown_timeout_s)

    @property
    def ready(self) -> bool:
        if self.status == "ready" and isinstance(self.batcher, ContinuousBatcher) and not self.batcher.healthy:
            self.status, self.failure = "failed", "a scheduler loop died (see the log)"
            self.metrics.ready.set(0)
        return self.status == "ready"

    # ---- translation ------------------------------------------------------------------------------------------

    async def translate(self, job: TranslationJob) -> JobResult:
        """Translate every text of the job; raises ``EngineError`` subclasses (see service.errors)."""
        if self.status == "stopping":
            raise ShuttingDown("the service is shutting down")
        if not self.ready or self.registry is None:
            raise NotReady("models are still loading" if self.status == "starting" else f"not ready: {self.failure}")
        timeout = self._check_limits(job)
        deadline = time.monotonic() + timeout
        if sum(map(len, job.texts)) > INLINE_PREPARATION_CHARS:  # keep the event loop responsive
            plans, wanted = await asyncio.to_thread(self._prepare, job)
        else:
            plans, wanted = self._prepare(job)
        total = sum(len(sentences) for sentences in wanted.values())
        options = {model_id: self._search_options(job, self.registry.models[model_id]) for model_id in wanted}
        self._check_work(wanted, options)

        found, missing = self._from_cache(job, wanted, options)
        if job.charge_work is not None:
            job.charge_work(_work_of(missing, options))
        decoded: dict[str, list[list[Translation]]] = {}
        queue_s, busy_s = 0.0, 0.0
        if any(missing.values()):
            decoded, queue_s, busy_s = await self._decode(job, missing, options, deadline)
            self._to_cache(job, missing, decoded, options)
        results = {}
        for model_id, distinct in wanted.items():
            fresh = dict(zip(missing[model_id], decoded.get(model_id, [])))
            results[model_id] = [found[model_id][s] if s in found[model_id] else fresh[s] for s in distinct]

        index = {model_id: {s: i for i, s in enumerate(distinct)} for model_id, distinct in wanted.items()}
        translations = []
        for plan in plans:
            model_id = plan.model.id if plan.model else ""
            translations.append(self._assemble(plan, index.get(model_id, {}), results.get(model_id, []), job))
        return JobResult(translations, sorted(wanted), total, queue_s * 1000, busy_s * 1000,
                         sum(map(len, found.values())))

    def _prepare(self, job: TranslationJob) -> tuple[list[_TextPlan], dict[str, dict[str, list[int]]]]:
        """Plans per text and, per model, its distinct sentences (first-seen order) with their token ids."""
        plans = self._plan(job)
        wanted: dict[str, dict[str, list[int]]] = {}
        for plan in plans:
            if plan.model is None:
                continue
            distinct = wanted.setdefault(plan.model.id, {})
            for pieces in plan.units:
                for piece in pieces:
                    if piece.translate and piece.text not in distinct:
                        distinct[piece.text] = plan.model.translator.encode(_model_input(piece.text, job.terms,
                                                                                         plan.source_language))
        total = sum(len(sentences) for sentences in wanted.values())
        if total > self.settings.max_queue_sentences:
            raise InvalidJob(f"the texts hold {total} sentences; at most {self.settings.max_queue_sentences} "
                             "fit in one request")
        return plans, wanted

    def _check_work(self, wanted: dict[str, dict[str, list[int]]], options: dict[str, SearchOptions]) -> None:
        """The continuous scheduler's queue counts work: a request that could never fit in it is a 400."""
        if self.settings.scheduler != "continuous":
            return
        cost = _work_of(wanted, options)
        if cost > self.settings.max_queue_work:
            raise InvalidJob(f"the texts are {cost} units of work (source tokens x beam size); at most "
                             f"{self.settings.max_queue_work} fit in one request: send fewer or shorter texts, or "
                             "a smaller beam")

    def _from_cache(self, job: TranslationJob, wanted: dict[str, dict[str, list[int]]],
                    options: dict[str, SearchOptions]
                    ) -> tuple[dict[str, dict[str, list[Translation]]], dict[str, dict[str, list[int]]]]:
        """Split each model's distinct sentences into those the cache answers (their n-best) and those to decode
        (their ids); cache hits never reach the batcher."""
        assert self.registry is not None
        found: dict[str, dict[str, list[Translation]]] = {model_id: {} for model_id in wanted}
        if not self.cache.enabled:
            return found, wanted
        missing: dict[str, dict[str, list[int]]] = {model_id: {} for model_id in wanted}
        for model_id, distinct in wanted.items():
            model = self.registry.models[model_id]
            for sentence, ids in distinct.items():
                nbest = self.cache.get(cache_key(model, ids, options[model_id]))
                if nbest is None or (job.terms and any(t.attention is None for t in nbest)):  # terms: need all
                    missing[model_id][sentence] = ids
                    continue
                if job.confidence and any(t.signals is None for t in nbest):  # stored by a job that needed none
                    model.translator.assess(ids, nbest)
                found[model_id][sentence] = nbest
        return found, missing

    def _to_cache(self, job: TranslationJob, decoded_ids: dict[str, dict[str, list[int]]],
                  decoded: dict[str, list[list[Translation]]], options: dict[str, SearchOptions]) -> None:
        """Store the usable n-best lists just decoded. Attention is kept only for the best hypothesis and only when
        the job asked for it (a batch companion may have): nothing else is ever returned, and it is most of an
        entry's memory. A job with glossary terms keeps every hypothesis's: each of them gets the terms put in
        place through its own alignment."""
        if not self.cache.enabled:
            return
        assert self.registry is not None
        for model_id, distinct in decoded_ids.items():
            model = self.registry.models[model_id]
            for ids, nbest in zip(distinct.values(), decoded[model_id]):
                if not _usable(nbest, job.decode_attention):
                    continue
                nbest = [t if (rank == 0 or job.terms) and job.decode_attention else replace(t, attention=None)
                         for rank, t in enumerate(nbest)]
                self.cache.put(cache_key(model, ids, options[model_id]), nbest)

    async def _decode(self, job: TranslationJob, wanted: dict[str, dict[str, list[int]]],
                      options: dict[str, SearchOptions], deadline: float
                      ) -> tuple[dict[str, list[list[Translation]]], float, float]:
        """Queue every distinct sentence, wait for all of them; n-best per sentence by model, the longest wait
        in the queue and the time spent decoding (seconds)."""
        assert self.registry is not None
        submitted: list[tuple[str, list]] = []
        try:
            for model_id, distinct in wanted.items():
                submitted.append((model_id, self.batcher.submit(model_id, options[model_id], list(distinct.values()),
                                                                deadline, job.flow)))
        except QueueFull as error:
            self._cancel(submitted)
            raise Overloaded("too many queued sentences; retry later", error.retry_after_s) from error
        except BatcherStopped as error:
            self._cancel(submitted)
            raise ShuttingDown("the service is shutting down") from error

        waiting = [asyncio.wrap_future(f) for _, futures in submitted for f in futures]
        gathered = asyncio.gather(*waiting)
        # When this job is abandoned (deadline, client gone), the futures it withdraws end the gathering future
        # with an error nobody awaits any more: consume it, or asyncio logs "exception was never retrieved".
        gathered.add_done_callback(lambda f: f.cancelled() or f.exception())
        try:
            outcomes = await asyncio.wait_for(gathered, timeout=max(0.0, deadline - time.monotonic()))
        except (TimeoutError, DeadlineExceeded) as error:
            self._cancel(submitted)
            raise JobTimeout("the request could not be finished before its deadline") from error
        except BatcherStopped as error:
            self._cancel(submitted)
            raise ShuttingDown("the service shut down before the request was finished") from error
        except BaseException:  # cancelled (the caller went away) or failed: drop what has not started
            self._cancel(submitted)
            raise

        reranking = any(self.registry.models[m].translator.reranker is not None for m in wanted)
        if reranking or len(outcomes) > INLINE_FINISH_SENTENCES:  # keep the event loop responsive
            results = await asyncio.to_thread(self._finish, wanted, outcomes, job.confidence)
        else:
            results = self._finish(wanted, outcomes, job.confidence)
        stats = [s for _, s in outcomes]
        return results, max(s.queue_s for s in stats), _busy_s(stats)

    def _finish(self, wanted: dict[str, dict[str, list[int]]], outcomes: list[tuple[list[Hypothesis], BatchStats]],
                confidence: bool) -> dict[str, list[list[Translation]]]:
        """Decoded hypotheses -> translations (text, pieces, and the confidence if asked for), per model in the
        order of ``wanted``."""
        assert self.registry is not None
        results: dict[str, list[list[Translation]]] = {}
        position = 0
        for model_id, distinct in wanted.items():
            translator = self.registry.models[model_id].translator
            chunk = outcomes[position : position + len(distinct)]
            position += len(distinct)
            results[model_id] = translator.finish_many(list(distinct.values()), [nbest for nbest, _ in chunk],
                                                       confidence)
        return results

    def _cancel(self, submitted: list[tuple[str, list]]) -> None:
        futures = [f for _, fs in submitted for f in fs]
        if futures:
            self.batcher.cancel(futures)

    def _run_batch(self, model_id: str, options: SearchOptions, sources: list[list[int]]) -> list[list[Hypothesis]]:
        """The request-level batcher's runner (worker thread): one search over one decoder batch."""
        results = search(self._step_model(model_id), sources, options)
        self.metrics.sentences.labels(model_id).inc(len(sources))
        self.metrics.generated_tokens.labels(model_id).inc(
            sum(len(n[0].tokens) + n[0].complete for n in results if n))
        return results

    def _step_model(self, model_id: str) -> StepModel:
        assert self.registry is not None
        return self.registry.models[model_id].translator.model

    def _search_options(self, job: TranslationJob, model: LoadedModel) -> SearchOptions:
        """The one object that says how ``job``'s sentences are decoded by ``model``: the client's choices (checked
        by ``_check_limits``) with the service's and the card's defaults. The cache, the queue's work accounting
        and the search all use it as it is."""
        return model.search_options(self._beam_size(job, model), job.n_best, job.decode_attention)

    # ---- planning and reassembly ------------------------------------------------------------------------------

    def _check_limits(self, job: TranslationJob) -> float:
        """Validate sizes and options; returns the job's timeout in seconds."""
        s = self.settings
        if not job.texts:
            raise InvalidJob("no text given")
        if len(job.texts) > s.max_texts:
            raise InvalidJob(f"too many texts: {len(job.texts)} (at most {s.max_texts} per request)")
        for index, text in enumerate(job.texts):
            if len(text) > s.max_text_chars:
                raise InvalidJob(f"text {index} has {len(text)} characters (at most {s.max_text_chars})")
            check_unicode(text, f"text {index}")
        if sum(map(len, job.texts)) > s.max_request_chars:
            raise InvalidJob(f"the texts have more than {s.max_request_chars} characters together")
        if job.format not in ("text", "html"):
            raise InvalidJob(f"format must be text or html, not {job.format!r}")
        if job.beam_size is not None and not 1 <= job.beam_size <= s.max_beam_size:
            raise InvalidJob(f"beam_size must be between 1 and {s.max_beam_size}")
        if not 1 <= job.n_best <= s.max_beam_size:
            raise InvalidJob(f"the number of translations per text (n_best) must be between 1 and {s.max_beam_size}")
        if job.beam_size is not None and job.n_best > job.beam_size:
            raise InvalidJob(f"n_best ({job.n_best}) cannot exceed beam_size ({job.beam_size})")
        timeout = s.request_timeout_s if job.timeout_s is None else job.timeout_s
        if not s.min_request_timeout_s <= timeout <= s.max_request_timeout_s:
            raise InvalidJob(f"timeout must be between {s.min_request_timeout_s} and {s.max_request_timeout_s} s")
        return timeout

    def _beam_size(self, job: TranslationJob, model: LoadedModel) -> int:
        if job.beam_size is not None:
            return job.beam_size
        default = self.settings.default_beam_size or model.default_beam_size
        return max(min(default, self.settings.max_beam_size), job.n_best)

    def resolve_target(self, target: str) -> str:
        assert self.registry is not None
        code = languages.normalize_code(target)
        if code == languages.AUTO:
            raise InvalidJob("target cannot be auto")
        if code not in self.registry.target_languages:
            raise InvalidJob(_unsupported(code, "target", self.registry.target_languages))
        return code

    def resolve_source(self, source: str, target: str) -> str | None:
        """A served source code for ``target``, or None for auto-detection."""
        assert self.registry is not None
        code = languages.normalize_code(source)
        if code == languages.AUTO:
            return None
        if code == target:
            raise InvalidJob(f"source and target are both {code}")
        if code not in self.registry.source_languages:
            raise InvalidJob(_unsupported(code, "source", self.registry.source_languages))
        if self.registry.for_pair(code, target) is None:
            pairs = ", ".join(f"{m.source}-{m.target}" for m in self.registry.models.values())
            raise InvalidJob(f"{code} to {target} is not served (served pairs: {pairs})")
        return code

    def detect(self, text: str, candidates: list[str] | None = None) -> list[Detection]:
        """Ranked source-language guesses among the served source languages (or ``candidates``)."""
        assert self.registry is not None
        candidates = candidates or self.registry.source_languages
        detectable = [c for c in candidates if _detectable(c)]
        if self.detector is None or not detectable or not text.strip():
            return [Detection(code, 0.0) for code in candidates]
        ranked = self.detector.rank(text, detectable)
        return ranked + [Detection(code, 0.0) for code in candidates if code not in detectable]

    def _plan(self, job: TranslationJob) -> list[_TextPlan]:
        """Per text: its source language (detected for auto), model, HTML structure and sentence pieces.

        Auto-detection chooses among the languages with a model into the target, plus the target itself:
        a text already in the target language is returned unchanged (as LibreTranslate does).
        """
        assert self.registry is not None
        target = self.resolve_target(job.target)
        source = self.resolve_source(job.source, target)
        candidates = self.registry.sources_of(target) + ([target] if _detectable(target) else [])
        plans = []
        for index, text in enumerate(job.texts):
            document = _parse_html(text, index) if job.format == "html" else None
            units = document.texts if document is not None else [text]
            detected = None
            language = source
            if language is None:
                detected = self.detect(" ".join(units), candidates)[0]
                language = detected.language
            model = self.registry.for_pair(language, target) if language != target else None
            pieces = [self._segment(unit, language, job.terms) for unit in units] if model else []
            plans.append(_TextPlan(text, language, detected, model, document, pieces))
        return plans

    def _segment(self, unit: str, language: str, terms: tuple[glossary.Term, ...]) -> list[Piece]:
        """Sentence pieces of one text unit; no term occurrence is split between two sentences, and a sentence of
        nothing but do-not-translate spans (an HTML text node ``{user}``) is copied, not translated."""
        pieces = segment(unit, language, self.settings.max_sentence_chars)
        if terms:
            pieces = keep_together(pieces, [(o.start, o.end) for o in glossary.find(unit, terms, language)])
            pieces = [Piece(p.text, False) if p.translate and glossary.only_verbatim(
                p.text, glossary.find(p.text, terms, language)) else p for p in pieces]  # copied, not translated
        return pieces

    def _assemble(self, plan: _TextPlan, index: dict[str, int], nbests: list[list[Translation]],
                  job: TranslationJob) -> TextTranslation:
        """Rebuild one text from its sentences' n-best lists: variant k uses each sentence's k-th best."""
        if plan.model is None:
            return TextTranslation(plan.text, None, [], [], plan.source_language, None, plan.detected)
        sentences: list[SentenceTranslation] = []
        variants: list[tuple[str, float | None]] = []
        for rank in range(job.n_best):
            scores: list[float] = []
            units = []
            for pieces in plan.units:
                replacements = []
                for piece in pieces:
                    if not piece.translate:
                        continue
                    nbest = nbests[index[piece.text]]
                    if not _usable(nbest, job.decode_attention):
                        log.error("unusable model output", extra={"model": plan.model.id, "hypotheses": len(nbest)})
                        raise BadModelOutput(f"model {plan.model.id} produced no usable translation for "
                                             f"{piece.text[:60]!r} ({'no hypothesis' if not nbest else 'NaN'}); "
                                             "the model may be broken")
                    choice = nbest[min(rank, len(nbest) - 1)]
                    text = model_text = choice.text.strip()  # the whitespace around a sentence is the separators' job
                    if job.terms:
                        text = _with_terms(piece.text, choice, job.terms, plan.source_language, plan.model.target)
                    replacements.append(text)
                    scores.append(choice.score)
                    if rank == 0:
                        sentences.append(SentenceTranslation(
                            piece.text, text, choice.score, choice.source_tokens, choice.target_tokens,
                            choice.attention if job.return_attention else None, choice.confidence,
                            model_text if text != model_text else None))
                units.append(join(pieces, replacements))
            text = plan.document.render(units) if plan.document is not None else units[0]
            variants.append((text, float(np.mean(scores)) if scores else None))
        alternatives, seen = [], {variants[0][0]}
        for text, score in variants[1:]:
            if text not in seen:
                seen.add(text)
                alternatives.append((text, score))
        confidences = [s.confidence for s in sentences]
        confidence = min(confidences) if confidences and None not in confidences else None
        return TextTranslation(variants[0][0], variants[0][1], alternatives, sentences, plan.source_language,
                               plan.model.id if plan.model else None, plan.detected, confidence)


def _work_of(sentences: dict[str, dict[str, list[int]]], options: dict[str, SearchOptions]) -> int:
    """What decoding ``sentences`` (model id -> text -> token ids) costs, in source tokens x beam size."""
    return sum(work(ids, options[model_id].beam_size) for model_id, distinct in sentences.items()
               for ids in distinct.values())


def _busy_s(stats: list[BatchStats]) -> float:
    """Seconds during which at least one of the job's sentences was being decoded (the union of their spans)."""
    spans = sorted((s.finished - s.inference_s, s.finished) for s in stats)
    busy, end = 0.0, -math.inf
    for start, stop in spans:
        busy += max(0.0, stop - max(start, end))
        end = max(end, stop)
    return busy


def _model_input(sentence: str, terms: tuple[glossary.Term, ...], language: str) -> str:
    """The sentence as the model reads it: do-not-translate spans masked (``glossary.mask``)."""
    return glossary.mask(sentence, glossary.find(sentence, terms, language))[0] if terms else sentence


def _with_terms(sentence: str, choice: Translation, terms: tuple[glossary.Term, ...], source_language: str,
                target_language: str) -> str:
    """The best translation of ``sentence`` with its glossary and do-not-translate terms put in place through the
    word alignment (``service.glossary``); unchanged when no term occurs in the sentence."""
    occurrences = glossary.find(sentence, terms, source_language)
    if not occurrences or choice.attention is None:
        return choice.text.strip()
    sentence, occurrences = glossary.mask(sentence, occurrences)  # what the model read
    alignment = align(choice.source_tokens, choice.target_tokens, choice.attention)
    return glossary.apply(sentence, occurrences, alignment, target_language)


def _usable(nbest: list[Translation], with_attention: bool) -> bool:
    """At least one hypothesis, finite scores and (when it is returned) finite attention."""
    return bool(nbest) and all(math.isfinite(t.score) for t in nbest) and not (with_attention and any(
        t.attention is not None and not np.isfinite(t.attention).all() for t in nbest))


def check_unicode(text: str, what: str) -> None:
    """Refuse text that cannot be encoded as UTF-8: JSON's "\\ud800" escapes decode to lone surrogates, which
    the tokenizer, the language detector and the response encoder all reject."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidJob(f"{what} is not valid Unicode: lone surrogate {text[error.start]!a} at position "
                         f"{error.start}") from error


def _parse_html(text: str, index: int) -> htmltext.HtmlDocument:
    try:
        return htmltext.parse(text)
    except (AssertionError, ValueError) as error:  # the standard parser's ways of giving up
        raise InvalidJob(f"text {index} cannot be parsed as HTML: {error}") from error


def _detectable(code: str) -> bool:
    return code in known_languages()


def _unsupported(code: str, role: str, served: list[str]) -> str:
    known = "" if languages.is_known(code) else " (not a known ISO 639-1 language code)"
    return f"{role} language {code!r} is not supported{known}; served {role} languages: {', '.join(served)}"
