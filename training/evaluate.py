"""Score an exported model directory with sacreBLEU through the service's own decoding code.

    python -m training.evaluate --model-dir models/de-en [--splits multi30k:test2016] [--beams 1 5]

The evaluation sets are rebuilt from the data recipe in the card (corpora, held-out split seeds, cleaning
rules), so they are exactly the sets held out in training. Writes the scores (with sacreBLEU signatures)
into the model card and prints a markdown table. A model whose card asks for reranking (``training.rerank``) is
scored as the service decodes it, reranked by the model of the reverse direction beside it, and also without
(``beam5-plain``). When the directory ships an int8 decoder, it is kept only
if it loses at most 0.3 BLEU on the first test set (beam search).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

from inference.card import ModelCard, search_options, write_card
from inference.onnx_model import OnnxSeq2Seq
from inference.rerank import reranker_for
from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from training.cleaning import CleaningRules
from training.corpus_config import parse_sources
from training.datasets import PreparedData, prepare_data
from training.significance import bleu_interval, sentence_statistics

log = logging.getLogger("training.evaluate")
LENGTH_BUCKETS = ((0, 10), (11, 15), (16, 20), (21, 25), (26, 10_000))
INT8_MAX_BLEU_DROP = 0.3


def bucket_name(low: int, high: int) -> str:
    return f"<={high}" if low == 0 else (f">{low - 1}" if high >= 10_000 else f"{low}-{high}")


def score(hypotheses: list[str], references: list[str], sources: list[str] | None = None) -> dict:
    """Cased and lowercased BLEU (with its 95% bootstrap interval over sentences) and chrF with signatures; BLEU by
    source length (words) when sources given."""
    bleu, bleu_lc, chrf = BLEU(), BLEU(lowercase=True), CHRF()
    low, high = bleu_interval(sentence_statistics(hypotheses, references))
    result = {
        "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
        "bleu_interval_95": [round(low, 2), round(high, 2)],
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


def translate_split(translator: SentenceTranslator, sources: list[str], options: SearchOptions
                    ) -> tuple[list[str], float]:
    """Translations of ``sources`` (each distinct source decoded once) and sentences per second."""
    distinct = list(dict.fromkeys(sources))
    started = time.perf_counter()
    results = translator.translate(distinct, options)
    speed = len(distinct) / (time.perf_counter() - started)
    best = {source: nbest[0].text for source, nbest in zip(distinct, results)}
    return [best[s] for s in sources], speed


def rows_by_source(sources: list[str]) -> list[list[int]]:
    """The row indices of each distinct source, in order of first appearance."""
    grouped: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        grouped.setdefault(source, []).append(i)
    return list(grouped.values())


def multi_reference_score(hypotheses: list[str], sources: list[str], references: list[str]) -> dict | None:
    """When sources repeat with different references (Tatoeba keeps every accepted translation), score each
    distinct source once against all of its references. None when every source is distinct."""
    rows = rows_by_source(sources)
    if len(rows) == len(sources):
        return None
    width = max(len(r) for r in rows)
    streams = [[references[r[k]] if k < len(r) else None for r in rows] for k in range(width)]
    hyps = [hypotheses[r[0]] for r in rows]
    return {"segments": len(rows), "max_references": width,
            "bleu": round(BLEU().corpus_score(hyps, streams).score, 2),
            "bleu_lowercase": round(BLEU(lowercase=True).corpus_score(hyps, streams).score, 2),
            "chrf": round(CHRF().corpus_score(hyps, streams).score, 2)}


def search_name(beam: int) -> str:
    return "greedy" if beam == 1 else f"beam{beam}"


def recipe_set_names(card: ModelCard, available: list[str], kind: str) -> list[str]:
    """The names of the card's ``kind`` ("valid" or "test") sets, as its data recipe lists them (older cards, which
    have none: the available sets whose name says so)."""
    listed = (card.training.get("data_recipe") or {}).get(kind)
    return list(listed) if listed else [n for n in available if ("val" if kind == "valid" else kind) in n]


def searches(beams: list[int], translator: SentenceTranslator) -> list[tuple[int, str, SentenceTranslator]]:
    """(beam, score key, translator) for each beam size; a reranking translator's beams are also scored without
    reranking (key ``beamN-plain``), so the card shows what the reranking is worth."""
    result = [(beam, search_name(beam), translator) for beam in beams]
    if translator.reranker is not None:
        plain = SentenceTranslator(translator.model, translator.tokenizer, source_language=translator.source_language)
        result += [(beam, f"{search_name(beam)}-plain", plain) for beam in beams if beam > 1]
    return result


def evaluation_sets(card: ModelCard, data_dir: Path, mirror: Path | None) -> dict[str, list[tuple[str, str]]]:
    """The card's validation and test sets, rebuilt from its data recipe (default: Multi30k val and test2016)."""
    data = card_data(card, data_dir, mirror)
    return {**data.valid, **data.test}


def card_data(card: ModelCard, data_dir: Path, mirror: Path | None) -> PreparedData:
    """The model's data, rebuilt from the recipe in its card; its evaluation sets checked against the card's
    fingerprints."""
    training, source, target = card.training, card.source_language, card.target_language
    sources = parse_sources(training.get("data_recipe"), source, target)
    rules = CleaningRules(**training.get("cleaning_rules", {}))
    data = prepare_data(sources, source, target, rules, data_dir, mirror)
    for name, digest in data.fingerprints().items():
        recorded = training.get("evaluation_sets_sha256", {}).get(name)
        if recorded is not None and recorded != digest:
            raise SystemExit(f"{card.id}: the evaluation set {name} rebuilt from the card's recipe differs from "
                             f"the one held out at export (SHA-256 {digest[:12]}, card {recorded[:12]}): the corpus "
                             "or the cleaning changed")
    return data


def evaluate(model_dir: Path, data_dir: Path, splits: list[str] | None, beams: list[int],
             mirror: Path | None = None) -> ModelCard:
    """Score the model on its evaluation sets (or the named ones) and write the scores into its card."""
    model = OnnxSeq2Seq(model_dir)
    card = model.card
    reranker = reranker_for(card, model_dir)
    translator = SentenceTranslator(model, model.tokenizer, reranker=reranker)
    available = evaluation_sets(card, data_dir, mirror)
    unknown = sorted(set(splits or []) - set(available))
    if unknown:
        raise SystemExit(f"{model_dir}: no evaluation set {unknown}; it has {sorted(available)}")
    pairs = {name: available[name] for name in (splits or available)}
    scores: dict = {}
    for split, split_pairs in pairs.items():
        sources, references = [s for s, _ in split_pairs], [t for _, t in split_pairs]
        for beam, key, decoder in searches(beams, translator):
            hypotheses, speed = translate_split(decoder, sources, search_options(card, beam))
            result = {**score(hypotheses, references, sources), "sentences_per_second": round(speed, 1)}
            multi = multi_reference_score(hypotheses, sources, references)
            if multi:
                result["multi_reference"] = multi
            scores.setdefault(split, {})[key] = result
            log.info("%s %s %s: %s", card.id, split, key,
                     {k: v for k, v in scores[split][key].items() if k in ("bleu", "bleu_lowercase", "chrf")})
    sections: dict = {"scores": scores}

    test_sets = [name for name in recipe_set_names(card, list(pairs), "test") if name in pairs]
    if card.files.decoder_int8 is not None and test_sets:
        beam, key = max(beams), search_name(max(beams))
        int8 = OnnxSeq2Seq(model_dir, quantized=True)
        test_name = test_sets[0]
        test = pairs[test_name]
        hypotheses, speed = translate_split(SentenceTranslator(int8, int8.tokenizer, reranker=reranker),
                                            [s for s, _ in test], search_options(card, beam))
        int8_bleu = score(hypotheses, [t for _, t in test])["bleu"]
        drop = round(scores[test_name][key]["bleu"] - int8_bleu, 2)
        sections["int8"] = {"test_set": test_name, "bleu": int8_bleu, "bleu_drop": drop, "search": key,
                        "sentences_per_second": round(speed, 1), "shipped": drop <= INT8_MAX_BLEU_DROP}
        log.info("int8 decoder: %s %s BLEU %.2f (drop %.2f)", test_name, key, int8_bleu, drop)
        if drop > INT8_MAX_BLEU_DROP:
            (model_dir / card.files.decoder_int8).unlink()
            sections["files"] = card.files.model_copy(update={"decoder_int8": None})
    return write_card(model_dir, card.with_sections(**sections))


def markdown_table(cards: list[ModelCard]) -> str:
    lines = ["| model | split | search | BLEU | BLEU 95% interval | BLEU (lowercased) | chrF |",
             "|---|---|---|---:|---:|---:|---:|"]
    for card in cards:
        for split, by_search in (card.scores or {}).items():
            for search_name, s in by_search.items():
                interval = "-".join(f"{x:.2f}" for x in s.get("bleu_interval_95", []))
                lines.append(f"| {card.id} | {split} | {search_name} | {s['bleu']:.2f} | {interval} | "
                             f"{s['bleu_lowercase']:.2f} | {s['chrf']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"))
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--splits", nargs="+", help="evaluation sets by name, e.g. multi30k:test2016 (default: all "
                        "validation and test sets of the model's data recipe)")
    parser.add_argument("--beams", nargs="+", type=int, default=[1, 5])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cards = [evaluate(d, args.data_dir, args.splits, args.beams, args.mirror) for d in args.model_dir]
    print(markdown_table(cards))


if __name__ == "__main__":
    main()
