"""models/<src>-<tgt>/model.json: the one contract between training (writes it) and the service (reads it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.search import SearchOptions

CARD_NAME = "model.json"
FORMAT_VERSION = 1


class ModelCardError(RuntimeError):
    """A model directory is incomplete, corrupted or of an unknown format."""


class _Section(BaseModel):
    """A part of the card the code relies on: every field typed, an unknown one is an error (a typo would
    otherwise be read as a default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Vocabulary(_Section):
    type: Literal["sentencepiece"]
    size: int = Field(gt=3)
    pad_id: int = Field(ge=0)
    unk_id: int = Field(ge=0)
    bos_id: int = Field(ge=0)
    eos_id: int = Field(ge=0)
    source_appends_eos: bool = True  # source ids end with </s>
    shared_source_target: bool = True  # one SentencePiece model for both sides


FileName = Annotated[str, Field(pattern=r"^[^/\\]+$")]  # a file in the model directory, never a path out of it


class Files(_Section):
    encoder: FileName
    decoder: FileName
    tokenizer: FileName
    decoder_int8: FileName | None = None  # dynamic int8 quantization of the decoder, where it kept its BLEU


class GraphSignature(_Section):
    inputs: list[str]
    outputs: list[str]


class Graphs(_Section):
    opset: int
    encoder: GraphSignature
    decoder: GraphSignature


ModelId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class Reranking(_Section):
    """Rescore the search's n-best with the model of the reverse direction (``inference.rerank``): the best
    candidate maximizes score + weight x log P(source | candidate) per source token."""

    model: ModelId  # the reverse direction's model id (its directory beside this one)
    weight: float = Field(gt=0)
    fit: dict[str, Any] = {}  # how the weight was chosen (training.rerank): validation BLEU per weight


class DecodingDefaults(_Section):
    beam_size: int = Field(1, ge=1)
    length_penalty: float = Field(1.0, ge=0)
    max_length_ratio: float = Field(2.0, gt=0)  # output length limit: ratio x source length + offset
    max_length_offset: int = Field(10, ge=0)
    rerank: Reranking | None = None


Record = dict[str, Any]  # an informational section: shown to users, not read by the decoder


class ModelCard(_Section):
    """``model.json``, validated: what export wrote and the service, evaluation and calibration read.

    The sections that decoding depends on are typed field by field; ``architecture``, ``training``, ``parity``,
    ``scores``, ``int8`` and ``confidence`` are records that export, evaluation and calibration fill in (the
    confidence calibration is checked where it is loaded, ``inference.confidence``).
    """

    format_version: Literal[1]
    id: ModelId
    source_language: str = Field(pattern=r"^[a-z]{2}$")  # ISO 639-1
    target_language: str = Field(pattern=r"^[a-z]{2}$")
    architecture: Record = {}
    vocabulary: Vocabulary
    files: Files
    graphs: Graphs
    decoding_defaults: DecodingDefaults = DecodingDefaults()
    training: Record = {}
    parity: Record | None = None
    scores: Record | None = None
    int8: Record | None = None
    confidence: Record | None = None
    sha256: dict[FileName, str] = {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: sections that are not there are left out, not written as null."""
        data = self.model_dump()
        data["files"] = {name: file for name, file in data["files"].items() if file is not None}
        if data["decoding_defaults"].get("rerank") is None:
            data["decoding_defaults"].pop("rerank", None)
        return {key: value for key, value in data.items() if value is not None}

    def with_sections(self, **sections: Any) -> ModelCard:
        """A copy with some top-level sections replaced (``None`` removes an optional one), validated again."""
        return ModelCard.model_validate({**self.to_dict(), **sections})

    @classmethod
    def parse(cls, data: Any, where: str) -> ModelCard:
        """Validate a card's JSON; ``ModelCardError`` names ``where`` and every field that is wrong."""
        if not isinstance(data, dict):
            raise ModelCardError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelCardError(f"{where}: unsupported format_version {data.get('format_version')!r}")
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            problems = "; ".join(_describe(problem) for problem in error.errors())
            raise ModelCardError(f"{where}: {problems}") from None


def _describe(problem: Any) -> str:
    field = ".".join(map(str, problem["loc"])) or "(card)"
    if problem["type"] == "missing":
        return f"{field} is missing"
    if problem["type"] == "extra_forbidden":
        return f"{field} is not a known field"
    got = repr(problem.get("input"))
    return f"{field}: {problem['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(model_dir: Path) -> ModelCard:
    """``model_dir/model.json``, validated (``ModelCardError`` says what is wrong); the files are checked by
    ``verify_files``."""
    path = model_dir / CARD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelCardError(f"{path} is missing") from error
    except json.JSONDecodeError as error:
        raise ModelCardError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise ModelCardError(f"{path} is not UTF-8 ({error.reason} at byte {error.start})") from error
    return ModelCard.parse(data, str(path))


def verify_files(model_dir: Path, card: ModelCard) -> None:
    """Check that every file the card lists exists and matches its SHA-256; raise naming the first bad file.
    A file listed in ``files`` without a checksum is an error too: every file the service loads is checked."""
    unchecked = sorted(set(card.to_dict()["files"].values()) - set(card.sha256))
    if unchecked:
        raise ModelCardError(f"{model_dir / CARD_NAME} lists {unchecked} in 'files' without a SHA-256")
    for name, expected in card.sha256.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelCardError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelCardError(f"{path} is corrupted: SHA-256 {actual}, model.json says {expected}")


def write_card(model_dir: Path, card: ModelCard | dict[str, Any]) -> ModelCard:
    """Validate and write model.json, with fresh checksums of every file the card's ``files`` names."""
    data = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    data["format_version"] = FORMAT_VERSION
    names = {name for name in (data.get("files") or {}).values() if name is not None}
    data["sha256"] = {name: sha256_file(model_dir / name) for name in sorted(names)}
    validated = ModelCard.parse(data, f"{model_dir / CARD_NAME} (not written)")
    (model_dir / CARD_NAME).write_text(json.dumps(validated.to_dict(), indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return validated


def search_options(card: ModelCard, beam_size: int | None = None, n_best: int = 1,
                   return_attention: bool = False) -> SearchOptions:
    """How this model is decoded: the card's ``decoding_defaults`` (beam size unless one is given, length penalty,
    length limits) with the caller's choices. The service, evaluation and calibration all decode through this, so
    scores measured in training are for the search users get."""
    defaults = card.decoding_defaults
    return SearchOptions(beam_size=defaults.beam_size if beam_size is None else beam_size, n_best=n_best,
                         length_penalty=defaults.length_penalty, max_length_ratio=defaults.max_length_ratio,
                         max_length_offset=defaults.max_length_offset, return_attention=return_attention)
