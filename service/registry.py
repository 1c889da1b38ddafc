"""Every model directory under the models path, verified, loaded into onnxruntime and warmed up.

Loading has two stages so that a broken deployment fails fast and clearly: ``verify_models`` reads each
model.json and checks the SHA-256 of every file it lists (seconds), ``load_models`` then builds the
onnxruntime sessions and decodes a few sentences per model. Only ONNX graphs, SentencePiece models and
JSON are read; nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from inference.card import CARD_NAME, ModelCard, ModelCardError, read_card, search_options, verify_files
from inference.confidence import ConfidenceModel
from inference.onnx_model import OnnxSeq2Seq, resolve_providers
from inference.rerank import Reranker
from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from service.config import Settings

log = logging.getLogger(__name__)

WARMUP_SENTENCES = ["Warm-up.", "A slightly longer warm-up sentence with a few more words in it, for the graphs."]


class ModelLoadError(RuntimeError):
    """A model directory cannot be served; the message names the directory or file."""


@dataclass
class VerifiedModel:
    path: Path
    card: ModelCard


@dataclass
class LoadedModel:
    """One served translation direction."""

    id: str
    source: str
    target: str
    card: ModelCard
    model: OnnxSeq2Seq
    translator: SentenceTranslator
    providers: list[str]

    @property
    def quantized(self) -> bool:
        return self.model.quantized

    @cached_property
    def fingerprint(self) -> str:
        """Content identity: SHA-256 of the card (which holds the SHA-256 of every file) and the decoder in use."""
        card = json.dumps(self.card.to_dict(), sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(f"{card}\n{'int8' if self.quantized else 'fp32'}".encode()).hexdigest()

    def search_options(self, beam_size: int, n_best: int, return_attention: bool) -> SearchOptions:
        """Search options for this model: the client's choices plus the card's length limits and penalty (and the
        whole beam as n-best when the model reranks it)."""
        return self.translator.search_options(search_options(self.card, beam_size, n_best, return_attention))

    @property
    def default_beam_size(self) -> int:
        return search_options(self.card).beam_size


@dataclass
class ModelRegistry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)  # directory name -> why it is not served

    def for_pair(self, source: str, target: str) -> LoadedModel | None:
        return next((m for m in self.models.values() if m.source == source and m.target == target), None)

    @property
    def source_languages(self) -> list[str]:
        return sorted({m.source for m in self.models.values()})

    @property
    def target_languages(self) -> list[str]:
        return sorted({m.target for m in self.models.values()})

    def targets_of(self, source: str) -> list[str]:
        return sorted(m.target for m in self.models.values() if m.source == source)

    def sources_of(self, target: str) -> list[str]:
        return sorted(m.source for m in self.models.values() if m.target == target)


def model_directories(models_dir: Path) -> list[Path]:
    """Sub-folders of the models path, hidden ones (e.g. an export in progress) excluded."""
    if not models_dir.is_dir():
        raise ModelLoadError(f"models directory {models_dir} does not exist (set MT_MODELS_DIR)")
    return sorted(p for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def verify_models(settings: Settings) -> tuple[list[VerifiedModel], dict[str, str]]:
    """Cards read and checksums checked. Raises ``ModelLoadError`` on the first broken model unless
    ``settings.skip_broken_models``, in which case broken ones are logged and returned separately."""
    verified: list[VerifiedModel] = []
    broken: dict[str, str] = {}
    for path in model_directories(settings.models_dir):
        try:
            if not (path / CARD_NAME).is_file():
                raise ModelCardError(f"{path / CARD_NAME} is missing")
            card = read_card(path)
            verify_files(path, card)
            _check_card(path, card, settings)
        except (ModelCardError, KeyError, TypeError) as error:
            message = str(error) if isinstance(error, ModelCardError) else f"{path / CARD_NAME}: bad card ({error!r})"
            if not settings.skip_broken_models:
                raise ModelLoadError(f"model {path.name}: {message}") from error
            log.error("skipping broken model %s: %s", path.name, message)
            broken[path.name] = message
            continue
        verified.append(VerifiedModel(path, card))
    ids = [v.card.id for v in verified]
    pairs = [(v.card.source_language, v.card.target_language) for v in verified]
    if len(set(ids)) != len(ids) or len(set(pairs)) != len(pairs):
        raise ModelLoadError(f"two model directories serve the same id or language pair: {ids}")
    if not verified:
        raise ModelLoadError(f"no servable model under {settings.models_dir}"
                             + (f" (broken: {sorted(broken)})" if broken else ""))
    return verified, broken


def _check_card(path: Path, card: ModelCard, settings: Settings) -> None:
    """What the card's schema cannot say: a usable confidence calibration, an int8 decoder where one is required."""
    if card.confidence is not None:
        try:
            ConfidenceModel.pair_from_card(card.confidence)
        except ValueError as error:
            raise ModelCardError(f"{path / CARD_NAME}: {error}") from None
    if settings.quantized == "true" and card.files.decoder_int8 is None:
        raise ModelCardError(f"{path} ships no int8 decoder but MT_QUANTIZED=true")


def load_models(verified: list[VerifiedModel], settings: Settings, broken: dict[str, str] | None = None,
                warmup: bool | None = None) -> ModelRegistry:
    """onnxruntime sessions for every verified model, warmed up unless disabled."""
    providers = resolve_providers(settings.device)
    registry = ModelRegistry(broken=dict(broken or {}))
    for item in verified:
        card = item.card
        has_int8 = card.files.decoder_int8 is not None
        quantized = settings.quantized == "true" or (settings.quantized == "auto" and has_int8)
        try:
            model = OnnxSeq2Seq(item.path, providers, quantized=quantized, threads=settings.threads, verify=False,
                                io_binding={"auto": None, "on": True, "off": False}[settings.io_binding])
        except Exception as error:  # onnxruntime raises its own exception types
            if not settings.skip_broken_models:
                raise ModelLoadError(f"model {item.path.name}: onnxruntime cannot load it: {error}") from error
            log.error("skipping model %s: onnxruntime cannot load it: %s", item.path.name, error)
            registry.broken[item.path.name] = str(error)
            continue
        confidence, reranked_confidence = ConfidenceModel.pair_from_card(card.confidence)
        translator = SentenceTranslator(model, model.tokenizer, source_language=card.source_language,
                                        confidence=confidence, reranked_confidence=reranked_confidence)
        loaded = LoadedModel(card.id, card.source_language, card.target_language, card, model,
                             translator, providers)
        if settings.min_confidence is not None and confidence is None:
            log.warning("model %s has no confidence calibration: MT_MIN_CONFIDENCE does not apply to it", loaded.id)
        if settings.warmup if warmup is None else warmup:
            warm_up(loaded)
        registry.models[loaded.id] = loaded
        log.info("loaded model %s (%s -> %s, %s decoder, %s)", loaded.id, loaded.source, loaded.target,
                 "int8" if quantized else "fp32", providers[0])
    if not registry.models:
        raise ModelLoadError("no model could be loaded")
    if settings.rerank:
        attach_rerankers(registry)
    return registry


def attach_rerankers(registry: ModelRegistry) -> None:
    """Give each model whose card asks for reranking the reverse direction's model, where it is served."""
    for loaded in registry.models.values():
        wanted = loaded.card.decoding_defaults.rerank
        if wanted is None:
            continue
        reverse = registry.models.get(wanted.model)
        if reverse is None or (reverse.source, reverse.target) != (loaded.target, loaded.source):
            log.warning("model %s: its card asks to rerank with %s, which is not served as %s -> %s; decoding "
                        "with plain beam search", loaded.id, wanted.model, loaded.target, loaded.source)
            continue
        loaded.translator.reranker = Reranker(reverse.model, reverse.model.tokenizer, wanted.weight)
        log.info("model %s: n-best reranked by %s (weight %.2f)", loaded.id, reverse.id, wanted.weight)


def warm_up(model: LoadedModel) -> None:
    """Run greedy and default-beam decoding once, so the first real request pays no graph set-up cost."""
    for beam in sorted({1, model.default_beam_size}):
        model.translator.translate(WARMUP_SENTENCES, model.search_options(beam, 1, True))
