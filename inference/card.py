"""models/<src>-<tgt>/model.json: the one contract between training (writes it) and the service (reads it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from inference.search import SearchOptions

CARD_NAME = "model.json"
FORMAT_VERSION = 1

ENCODER_INPUTS = ["src_tokens", "src_lengths"]
ENCODER_OUTPUTS = ["memory", "memory_keys", "memory_mask", "init_state"]
DECODER_INPUTS = ["prev_tokens", "state", "memory", "memory_keys", "memory_mask"]
DECODER_OUTPUTS = ["log_probs", "new_state", "attention"]
TOP_K_INPUT = "top_k"  # optional (training/top_k_graph.py): each row's k best log-probs and tokens, sorted
TOP_K_OUTPUTS = ["top_log_probs", "top_tokens"]


class ModelCardError(RuntimeError):
    """A model directory is incomplete, corrupted or of an unknown format."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(model_dir: Path) -> dict:
    path = model_dir / CARD_NAME
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelCardError(f"{path} is missing") from error
    except json.JSONDecodeError as error:
        raise ModelCardError(f"{path} is not valid JSON: {error}") from error
    except UnicodeDecodeError as error:
        raise ModelCardError(f"{path} is not UTF-8 ({error.reason} at byte {error.start})") from error
    if not isinstance(card, dict):
        raise ModelCardError(f"{path}: expected a JSON object, got {type(card).__name__}")
    if card.get("format_version") != FORMAT_VERSION:
        raise ModelCardError(f"{path}: unsupported format_version {card.get('format_version')!r}")
    return card


def verify_files(model_dir: Path, card: dict) -> None:
    """Check that every file the card lists exists and matches its SHA-256; raise naming the first bad file.
    A file listed in ``files`` without a checksum is an error too: every file the service loads is checked."""
    files, checksums = card.get("files"), card.get("sha256")
    if not isinstance(files, dict) or not isinstance(checksums, dict):
        raise ModelCardError(f"{model_dir / CARD_NAME}: 'files' and 'sha256' must be objects")
    unchecked = sorted(set(files.values()) - set(checksums))
    if unchecked:
        raise ModelCardError(f"{model_dir / CARD_NAME} lists {unchecked} in 'files' without a SHA-256")
    for name, expected in checksums.items():
        path = model_dir / name
        if not path.is_file():
            raise ModelCardError(f"{path} is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelCardError(f"{path} is corrupted: SHA-256 {actual}, model.json says {expected}")


def write_card(model_dir: Path, card: dict) -> None:
    """Write model.json with fresh checksums of every file the card's ``files`` names."""
    card = dict(card, format_version=FORMAT_VERSION)
    card["sha256"] = {name: sha256_file(model_dir / name) for name in sorted(set(card["files"].values()))}
    (model_dir / CARD_NAME).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def search_options(card: dict, beam_size: int | None = None, n_best: int = 1,
                   return_attention: bool = False) -> SearchOptions:
    """How this model is decoded: the card's ``decoding_defaults`` (beam size unless one is given, length penalty,
    length limits) with the caller's choices. The service, evaluation and calibration all decode through this, so
    scores measured in training are for the search users get."""
    defaults = card.get("decoding_defaults", {})
    return SearchOptions(beam_size=int(defaults.get("beam_size", 1)) if beam_size is None else beam_size,
                         n_best=n_best, length_penalty=float(defaults.get("length_penalty", 1.0)),
                         max_length_ratio=float(defaults.get("max_length_ratio", 2.0)),
                         max_length_offset=int(defaults.get("max_length_offset", 10)),
                         return_attention=return_attention)
