"""The native API: n-best, scores, attention, word alignments, glossaries, timings, model cards."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from service.alignment import align
from service.api.deps import get_engine, require_api_key, require_json, run_job
from service.api.routes_libre import ERRORS
from service.api.schemas import (
    Alternative,
    DetectedLanguageNative,
    ErrorResponse,
    SentenceAlignment,
    SentenceAttention,
    SentenceScore,
    Timing,
    TranslateRequest,
    TranslateResponse,
    TranslationItem,
)
from service.engine import SentenceTranslation, TextTranslation, TranslationEngine, TranslationJob
from service.errors import ConfidenceUnavailable, InvalidJob, NotReady
from service.glossary import GlossaryError, terms_of

router = APIRouter(prefix="/v1", tags=["native"])

WEIGHT_DECIMALS = 4


@router.post("/translate", response_model=TranslateResponse, response_model_exclude_none=True,
             responses={**ERRORS, 415: {"model": ErrorResponse, "description": "Body not declared as JSON"}},
             dependencies=[Depends(require_api_key), Depends(require_json)],
             summary="Translate texts with n-best lists, scores and attention")
async def translate(body: TranslateRequest, request: Request, response: Response,
                    engine: TranslationEngine = Depends(get_engine)) -> TranslateResponse:
    try:
        terms = terms_of(body.glossary, body.do_not_translate)
    except GlossaryError as error:
        raise InvalidJob(str(error)) from error
    threshold = body.min_confidence if body.min_confidence is not None else engine.settings.min_confidence
    job = TranslationJob(body.texts, body.source, body.target, body.format, body.beam_size, body.n_best,
                         body.return_attention or body.return_alignment, body.timeout, terms,
                         confidence=body.return_confidence or threshold is not None)
    result = await run_job(request, response, engine, job)
    if body.return_confidence or body.min_confidence is not None:
        uncalibrated = sorted({t.model_id for t in result.translations if t.model_id and t.confidence is None})
        if uncalibrated:
            raise ConfidenceUnavailable(f"model {', '.join(uncalibrated)} has no confidence calibration (its card "
                                        "lacks 'confidence': run python -m training.calibrate on it)")
    items = [_item(t, body, threshold) for t in result.translations]
    used = {t.model_id for t in result.translations if t.model_id}
    return TranslateResponse(
        model=used.pop() if len(used) == 1 else None,
        translations=items,
        timing=Timing(queue_ms=round(result.queue_ms, 2), inference_ms=round(result.inference_ms, 2)))


def _item(t: TextTranslation, body: TranslateRequest, min_confidence: float | None) -> TranslationItem:
    item = TranslationItem(text=t.text, model=t.model_id, source_language=t.source_language)
    if t.detected is not None:
        item.detected_language = DetectedLanguageNative(language=t.detected.language,
                                                        confidence=round(t.detected.confidence, 4))
    abstain = min_confidence is not None and t.confidence is not None and t.confidence < min_confidence
    if min_confidence is not None and t.confidence is not None:
        item.abstained = abstain
    if body.return_confidence or abstain:
        item.confidence = _rounded(t.confidence)
    if body.return_scores or body.return_confidence:
        item.sentences = [SentenceScore(source=s.source, text=None if abstain else s.text,
                                        score=s.score if body.return_scores else None,
                                        confidence=_rounded(s.confidence) if body.return_confidence else None)
                          for s in t.sentences]
    if abstain:
        item.text = None
        return item  # nothing of the withheld translation: no score, alternatives, attention or alignment
    if body.return_scores:
        item.score = t.score
    if body.n_best > 1:
        item.alternatives = [Alternative(text=text, score=score if body.return_scores else None)
                             for text, score in t.alternatives]
    if body.return_attention:
        item.attention = [SentenceAttention(source=s.source, text=s.decoded_text, source_tokens=s.source_tokens,
                                            target_tokens=s.target_tokens,
                                            weights=s.weights.astype(float).round(WEIGHT_DECIMALS).tolist())
                          for s in t.sentences if s.weights is not None]
    if body.return_alignment:
        item.alignment = [_alignment(s) for s in t.sentences if s.weights is not None]
    return item


def _rounded(confidence: float | None) -> float | None:
    return None if confidence is None else round(confidence, 4)


def _alignment(sentence: SentenceTranslation) -> SentenceAlignment:
    words = align(sentence.source_tokens, sentence.target_tokens, sentence.weights)
    return SentenceAlignment(source=sentence.source, text=sentence.decoded_text, source_words=words.source_words,
                             target_words=words.target_words, alignment=words.pharaoh)


@router.get("/models", summary="Model cards of the served models")
async def models(engine: TranslationEngine = Depends(get_engine)) -> dict:
    if engine.registry is None:
        raise NotReady("models are still loading")
    cards = []
    for model in engine.registry.models.values():
        card = {key: value for key, value in model.card.to_dict().items() if key != "sha256"}
        reranker = model.translator.reranker
        card["runtime"] = {"decoder": "int8" if model.quantized else "fp32", "providers": model.providers,
                           "reranked_by": model.card.decoding_defaults.rerank.model if reranker else None}
        cards.append(card)
    return {"models": cards, "broken": engine.registry.broken}
