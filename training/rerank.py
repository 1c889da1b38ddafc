"""Choose on validation data how much the reverse direction's model counts in reranking, and write it to the card.

    python -m training.rerank --model-dir models/de-en [--reverse models/en-de]

Decodes every validation set of the model's recipe with the card's default beam, keeping the whole beam as the
n-best; scores each candidate once with the reverse model (``inference.rerank``); and measures corpus BLEU of the
reranked best for each weight in ``WEIGHTS``. The weight with the best mean BLEU over the validation sets (each
set counts the same, whatever its size) goes into ``decoding_defaults.rerank`` with the whole sweep; where no
weight beats plain beam search, reranking is switched off. Test sets are never looked at.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from inference.card import ModelCard, read_card, search_options, write_card
from inference.onnx_model import OnnxSeq2Seq
from inference.rerank import Reranker, reverse_model
from inference.translator import SentenceTranslator
from training.evaluate import evaluation_sets, recipe_set_names, score

log = logging.getLogger("training.rerank")
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0)


def fit(model_dir: Path, reverse_dir: Path, data_dir: Path, mirror: Path | None = None
        ) -> tuple[ModelCard, dict[str, dict[str, float]]]:
    """Sweep ``WEIGHTS`` on the validation sets; -> the card as written, and BLEU by weight and set."""
    model = OnnxSeq2Seq(model_dir)
    card = model.card
    reverse = reverse_model(card, reverse_dir)
    reranker = Reranker(reverse, reverse.tokenizer, weight=1.0)
    translator = SentenceTranslator(model, model.tokenizer)
    available = evaluation_sets(card, data_dir, mirror)
    options = search_options(card, n_best=card.decoding_defaults.beam_size)
    sweep: dict[str, dict[str, float]] = {str(w): {} for w in WEIGHTS}
    for name in recipe_set_names(card, list(available), "valid"):
        pairs = available[name]
        distinct = list(dict.fromkeys(s for s, _ in pairs))
        nbests = translator.translate(distinct, options)
        reverse_scores = reranker.reverse_scores(distinct, [[t.text for t in nbest] for nbest in nbests])
        for weight in WEIGHTS:
            best = {source: nbest[int(np.argmax(np.array([t.score for t in nbest]) + weight * scores))].text
                    for source, nbest, scores in zip(distinct, nbests, reverse_scores)}
            sweep[str(weight)][name] = score([best[s] for s, _ in pairs], [t for _, t in pairs])["bleu"]
        log.info("%s %s: BLEU by weight %s", card.id, name, {w: s[name] for w, s in sweep.items()})
    if not sweep[str(WEIGHTS[0])]:
        raise SystemExit(f"{model_dir}: no validation set to choose the weight on")
    mean = {weight: float(np.mean(list(by_set.values()))) for weight, by_set in sweep.items()}
    chosen = max(WEIGHTS, key=lambda w: mean[str(w)])
    log.info("%s: mean validation BLEU by weight %s; chosen %s", card.id, mean, chosen)
    rerank = None if chosen == 0.0 else {
        "model": reverse.card.id, "weight": chosen,
        "fit": {"objective": f"mean corpus BLEU over the validation sets, beam {options.beam_size}",
                "reverse_model_sha256": reverse.card.sha256, "validation_bleu": sweep,
                "mean_validation_bleu": {w: round(m, 2) for w, m in mean.items()}}}
    defaults = card.decoding_defaults.model_dump(exclude={"rerank"})
    if rerank is not None:
        defaults["rerank"] = rerank
    return write_card(model_dir, card.with_sections(decoding_defaults=defaults)), sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--reverse", type=Path, help="the reverse direction's model directory (default: the one "
                        "beside --model-dir named <target>-<source>)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"))
    parser.add_argument("--mirror", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    card = read_card(args.model_dir)
    reverse_dir = args.reverse or args.model_dir.parent / f"{card.target_language}-{card.source_language}"
    fitted, _ = fit(args.model_dir, reverse_dir, args.data_dir, args.mirror)
    print(fitted.decoding_defaults.rerank or "reranking off: no weight beat plain beam search on validation data")


if __name__ == "__main__":
    main()
