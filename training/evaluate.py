"""Score an exported model directory with sacreBLEU through the service's own decoding code.

    python -m training.evaluate --model-dir models/de-en [--splits val test2016] [--beams 1 5]

Writes the scores (with sacreBLEU signatures) into the model card and prints a markdown table. When the
directory ships an int8 decoder, it is kept only if it loses at most 0.3 BLEU on test2016 (beam search).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

from service.decoding import SearchOptions
from service.model_card import write_card
from service.onnx_model import OnnxSeq2Seq
from service.pipeline import SentenceTranslator
from training.data import fetch_multi30k, load_pairs

log = logging.getLogger("training.evaluate")
LENGTH_BUCKETS = ((0, 10), (11, 15), (16, 20), (21, 25), (26, 10_000))
INT8_MAX_BLEU_DROP = 0.3


def bucket_name(low: int, high: int) -> str:
    return f"<={high}" if low == 0 else (f">{low - 1}" if high >= 10_000 else f"{low}-{high}")


def score(hypotheses: list[str], references: list[str], sources: list[str] | None = None) -> dict:
    """Cased and lowercased BLEU and chrF with signatures; BLEU by source length (words) when sources given."""
    bleu, bleu_lc, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    result = {
        "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
        "bleu_lowercase": round(bleu_lc.corpus_score(hypotheses, [references]).score, 2),
        "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
        "signatures": {"bleu": str(bleu.get_signature()), "bleu_lowercase": str(bleu_lc.get_signature()),
                       "chrf": str(chrf.get_signature())},
    }
    if sources is not None:
        buckets = {}
        for low, high in LENGTH_BUCKETS:
            rows = [i for i, s in enumerate(sources) if low <= len(s.split()) <= high]
            if rows:
                buckets[bucket_name(low, high)] = {
                    "sentences": len(rows),
                    "bleu": round(BLEU().corpus_score([hypotheses[i] for i in rows],
                                                      [[references[i] for i in rows]]).score, 2)}
        result["bleu_by_source_length"] = buckets
    return result


def translate_split(translator: SentenceTranslator, sources: list[str], beam: int, length_penalty: float) -> tuple[list[str], float]:
    started = time.perf_counter()
    results = translator.translate(sources, SearchOptions(beam_size=beam, length_penalty=length_penalty))
    return [nbest[0].text for nbest in results], len(sources) / (time.perf_counter() - started)


def search_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam{beam}"


def evaluate(model_dir: Path, data_dir: Path, splits: list[str], beams: list[int]) -> dict:
    model = OnnxSeq2Seq(model_dir)
    card = model.card
    src, tgt = card["source_language"], card["target_language"]
    length_penalty = card["decoding_defaults"]["length_penalty"]
    translator = SentenceTranslator(model, model.tokenizer)
    pairs = {split: load_pairs(data_dir, split, src, tgt, clean=False) for split in splits}
    scores: dict = {}
    for split in splits:
        sources, references = [s for s, _ in pairs[split]], [t for _, t in pairs[split]]
        for beam in beams:
            hypotheses, speed = translate_split(translator, sources, beam, length_penalty)
            key = search_name(beam)
            scores.setdefault(split, {})[key] = {**score(hypotheses, references, sources),
                                                 "sentences_per_second": round(speed, 1)}
            log.info("%s %s %s: %s", card["id"], split, key,
                     {k: v for k, v in scores[split][key].items() if k in ("bleu", "bleu_lowercase", "chrf")})
    card["scores"] = scores

    if "decoder_int8" in card["files"] and "test2016" in splits:
        beam, key = max(beams), search_name(max(beams))
        int8 = OnnxSeq2Seq(model_dir, quantized=True)
        test = pairs["test2016"]
        hypotheses, speed = translate_split(SentenceTranslator(int8, int8.tokenizer), [s for s, _ in test], beam,
                                            length_penalty)
        int8_bleu = score(hypotheses, [t for _, t in test])["bleu"]
        drop = round(scores["test2016"][key]["bleu"] - int8_bleu, 2)
        card["int8"] = {"test2016_bleu": int8_bleu, "bleu_drop": drop, "search": key,
                        "sentences_per_second": round(speed, 1), "shipped": drop <= INT8_MAX_BLEU_DROP}
        log.info("int8 decoder: test2016 %s BLEU %.2f (drop %.2f)", key, int8_bleu, drop)
        if drop > INT8_MAX_BLEU_DROP:
            (model_dir / card["files"].pop("decoder_int8")).unlink()
    write_card(model_dir, card)
    return card


def markdown_table(cards: list[dict]) -> str:
    lines = ["| model | split | search | BLEU | BLEU (lowercased) | chrF |", "|---|---|---|---:|---:|---:|"]
    for card in cards:
        for split, by_search in card["scores"].items():
            for search_name, s in by_search.items():
                lines.append(f"| {card['id']} | {split} | {search_name} | {s['bleu']:.2f} | "
                             f"{s['bleu_lowercase']:.2f} | {s['chrf']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"))
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--splits", nargs="+", default=["val", "test2016"])
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 5])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    fetch_multi30k(args.data_dir, args.mirror)
    cards = [evaluate(d, args.data_dir, args.splits, args.beams) for d in args.model_dir]
    print(markdown_table(cards))


if __name__ == "__main__":
    main()
