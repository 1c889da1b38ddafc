"""Fit and measure a model's translation confidence on held-out data; writes ``confidence`` into its card.

    python -m training.calibrate --model-dir models/de-en [--plot docs/confidence/de-en.png]

Calibration data: the model's validation sets, plus inputs the model should distrust: Multi30k's validation
captions in its other languages (French and Czech for a German model; their references are the captions in
the target language, so a bad translation gets the low sentence chrF it deserves) when the recipe uses
Multi30k, and seeded random strings (quality 0), each decoded every way the service can decode with the card (its
default search, greedy, and for a reranking card its beam without reranking). A logistic regression (scikit-learn)
over ``inference.confidence.SIGNALS`` predicts sentence chrF >= 50 for the outputs without reranking signals; where
the card reranks with the reverse model, a second one over ``RERANKED_SIGNALS`` (``model_reranked``) serves the
reranked outputs. The served confidence is then measured, per search, on the test sets and
on test-time inputs of the same kinds: Spearman correlation with sentence chrF, ROC AUC for chrF >= 50,
ROC AUC against each kind of foreign input, expected calibration error, and quality by confidence decile,
each beside the baseline (the mean token log-probability alone).

Where a test set repeats a source with other references (Tatoeba keeps every accepted translation), the card
also says how far the quality label itself can be trusted (``reference_agreement``): the same translation's
sentence chrF against one reference and against another, their Spearman correlation and how often they agree
on good vs bad, beside the confidence's correlation with each.
"""

from __future__ import annotations

import argparse
import logging
import random
import string
from dataclasses import replace
from pathlib import Path

import numpy as np
from sacrebleu.metrics import CHRF
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from inference.card import ModelCard, search_options, write_card
from inference.confidence import GOOD_CHRF, RERANKED_SIGNALS, SIGNALS, ConfidenceModel
from inference.onnx_model import OnnxSeq2Seq
from inference.rerank import reranker_for
from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from training.data import LANGUAGES as MULTI30K_LANGUAGES
from training.data import fetch_multi30k, read_split
from training.evaluate import evaluation_sets, recipe_set_names, rows_by_source, searches

log = logging.getLogger("training.calibrate")
RANDOM_STRINGS = 300
ECE_BINS = 10


def random_strings(count: int, seed: int) -> list[str]:
    """Seeded gibberish of three kinds: letter soup, letters with digits and punctuation, invented 'words'."""
    rng = random.Random(seed)
    soups = (string.ascii_letters + "äöüéèß ", string.ascii_letters + string.digits + string.punctuation + "  ")
    texts = []
    for i in range(count):
        if i % 3 < 2:
            texts.append("".join(rng.choice(soups[i % 3]) for _ in range(rng.randint(5, 80))).strip() or "x")
        else:
            words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(2, 10)))
                     for _ in range(rng.randint(2, 12))]
            texts.append(" ".join(words).capitalize() + ".")
    return texts


def foreign_sets(card: ModelCard, split: str, data_dir: Path, mirror: Path | None) -> dict[str, list[tuple[str, str]]]:
    """Multi30k ``split`` captions in languages other than the model's, paired with target-language captions."""
    recipe = card.training.get("data_recipe") or {}
    uses_multi30k = not recipe or any(c.get("preset") == "multi30k" for c in recipe.get("corpora", []))
    src, tgt = card.source_language, card.target_language
    if not uses_multi30k or tgt not in MULTI30K_LANGUAGES:
        return {}
    directory = fetch_multi30k(data_dir, mirror)
    references = read_split(directory, split, tgt)
    return {f"multi30k:{split}:{lang}": [(s, r) for s, r in zip(read_split(directory, split, lang), references)
                                          if s.strip() and r.strip()]
            for lang in MULTI30K_LANGUAGES if lang not in (src, tgt)}


def assess(translator: SentenceTranslator, pairs: list[tuple[str, str | None]],
           options: SearchOptions) -> tuple[np.ndarray, np.ndarray]:
    """Signals [N, len(RERANKED_SIGNALS)] of the best translation of each source (NaN for the reranking signals
    where it was not reranked), and its sentence chrF [N] (0 without reference)."""
    results = translator.translate([s for s, _ in pairs], options)
    chrf = CHRF()
    features = np.full((len(results), len(RERANKED_SIGNALS)), np.nan)
    for row, nbest in enumerate(results):
        features[row, : len(nbest[0].signals)] = nbest[0].signals
    quality = np.array([chrf.sentence_score(nbest[0].text, [ref]).score if ref else 0.0
                        for nbest, (_, ref) in zip(results, pairs)])
    return features, quality


def expected_calibration_error(probability: np.ndarray, outcome: np.ndarray, bins: int = ECE_BINS) -> float:
    """Mean |predicted - observed| over equal-width probability bins, weighted by bin size."""
    index = np.minimum((probability * bins).astype(int), bins - 1)
    return float(sum(np.mean(index == b) * abs(probability[index == b].mean() - outcome[index == b].mean())
                     for b in range(bins) if np.any(index == b)))


def fit(features: np.ndarray, quality: np.ndarray, good_chrf: float, names: tuple[str, ...] = SIGNALS
        ) -> ConfidenceModel:
    """Logistic regression of (quality >= good_chrf) on the standardized signals ``names``, the first columns of
    features [N, >= len(names)]; quality [N]."""
    features = features[:, : len(names)]
    good = quality >= good_chrf
    if good.all() or not good.any():
        raise SystemExit(f"calibration needs translations on both sides of chrF {good_chrf:g}: {int(good.sum())} of "
                         f"{len(good)} validation translations reach it (a model this weak or strong needs another "
                         "threshold: --good-chrf)")
    mean, scale = features.mean(0), features.std(0) + 1e-9
    regression = LogisticRegression(C=1.0, max_iter=2000).fit((features - mean) / scale, good)
    return ConfidenceModel(names, mean, scale, regression.coef_[0], float(regression.intercept_[0]), good_chrf)


def served_confidence(plain: ConfidenceModel, reranked: ConfidenceModel | None, features: np.ndarray) -> np.ndarray:
    """The confidence the service gives: features [N, len(RERANKED_SIGNALS)] -> [N], from ``reranked`` where a
    row has the reranking signals, else from ``plain``."""
    confidence = plain.probability(features[:, : len(SIGNALS)])
    if reranked is not None:
        complete = ~np.isnan(features).any(axis=1)
        confidence[complete] = reranked.probability(features[complete])
    return confidence


def measure(confidence: np.ndarray, quality: np.ndarray, foreign: dict[str, np.ndarray], good_chrf: float) -> dict:
    """Fit statistics of one score (confidence or baseline) on in-domain test data [N] and foreign inputs."""
    good = quality >= good_chrf
    result = {"spearman_chrf": round(float(spearmanr(confidence, quality)[0]), 3),
              "roc_auc_good": round(float(roc_auc_score(good, confidence)), 3) if 0 < good.sum() < len(good) else None}
    for kind, scores in foreign.items():
        labels = np.r_[np.ones(len(confidence)), np.zeros(len(scores))]
        result[f"roc_auc_vs_{kind}"] = round(float(roc_auc_score(labels, np.r_[confidence, scores])), 4)
    return result


def reference_agreement(sources: list[str], quality: np.ndarray, confidence: np.ndarray, good_chrf: float
                        ) -> dict | None:
    """For sources that appear twice or more (each row [N] a pair with its own reference; the translation is the
    same for every row of a source): how well sentence chrF against one reference predicts it against another, i.e.
    how noisy a one-reference quality label is. None with fewer than 20 such sources."""
    repeated = [r for r in rows_by_source(sources) if len(r) >= 2]
    first, second = (np.array([r[k] for r in repeated], dtype=int) for k in (0, 1))
    if len(first) < 20:
        return None
    a, b = quality[first], quality[second]
    return {"sources": len(first),
            "spearman_chrf_reference_a_vs_b": round(float(spearmanr(a, b)[0]), 3),
            "good_label_agreement": round(float(np.mean((a >= good_chrf) == (b >= good_chrf))), 3),
            "confidence_spearman_chrf_reference_a": round(float(spearmanr(confidence[first], a)[0]), 3),
            "confidence_spearman_chrf_reference_b": round(float(spearmanr(confidence[first], b)[0]), 3),
            "confidence_spearman_best_chrf": round(float(spearmanr(confidence[first], np.maximum(a, b))[0]), 3)}


def deciles(confidence: np.ndarray, quality: np.ndarray, good_chrf: float = GOOD_CHRF) -> list[dict]:
    """Mean confidence, mean sentence chrF and share of good translations per confidence decile, lowest first."""
    order = np.argsort(confidence, kind="stable")
    return [{"confidence": round(float(confidence[rows].mean()), 3), "chrf": round(float(quality[rows].mean()), 2),
             "good": round(float(np.mean(quality[rows] >= good_chrf)), 3), "sentences": len(rows)}
            for rows in np.array_split(order, 10)]


def calibrate(model_dir: Path, data_dir: Path, mirror: Path | None = None, plot: Path | None = None,
              max_per_set: int | None = None, good_chrf: float = GOOD_CHRF) -> ModelCard:
    """Fit the confidence on the model's validation data, measure it on its test data, write both into the card.

    The data are decoded every way the service can decode with the card: its default search (reranked where the
    card asks), greedy, and for a reranking card its beam without reranking. ``model_reranked`` is fitted on the
    reranked outputs, ``model`` on the outputs of the searches that have no reranking signals."""
    model = OnnxSeq2Seq(model_dir)
    card = model.card
    translator = SentenceTranslator(model, model.tokenizer, source_language=card.source_language,
                                    reranker=reranker_for(card, model_dir))
    options = search_options(card)
    runs = {key: (search_translator, replace(options, beam_size=beam)) for beam, key, search_translator
            in searches(sorted({options.beam_size, 1}, reverse=True), translator)}
    default = next(iter(runs))
    plain_keys = [key for key in runs if translator.reranker is None or key != default]
    sets = {name: pairs[:max_per_set] for name, pairs in evaluation_sets(card, data_dir, mirror).items()}
    valid_names, test_names = (recipe_set_names(card, list(sets), kind) for kind in ("valid", "test"))

    def gather(key: str, names: list[str], foreign_split: str, seed: int) -> tuple[dict, dict]:
        """One search's (in-domain sets, foreign inputs), each name -> (signals [N, F], chrF [N])."""
        search_translator, search = runs[key]
        domain = {name: assess(search_translator, sets[name], search) for name in names}
        others = {name.rsplit(":", 1)[1]: assess(search_translator, pairs[:max_per_set], search)
                  for name, pairs in foreign_sets(card, foreign_split, data_dir, mirror).items()}
        gibberish = random_strings(min(RANDOM_STRINGS, max_per_set or RANDOM_STRINGS), seed)
        others["random"] = assess(search_translator, [(s, None) for s in gibberish], search)
        return domain, others

    def stacked(parts: list[tuple[dict, dict]]) -> tuple[np.ndarray, np.ndarray]:
        labelled = [pair for domain, others in parts for pair in (*domain.values(), *others.values())]
        return np.concatenate([f for f, _ in labelled]), np.concatenate([q for _, q in labelled])

    fitted = {key: gather(key, valid_names, "val", seed=1) for key in runs}
    plain_model = fit(*stacked([fitted[key] for key in plain_keys]), good_chrf)
    reranked_model = None
    if translator.reranker is not None:
        features, quality = stacked([fitted[default]])
        complete = ~np.isnan(features).any(axis=1)  # the best of a reranked beam has the reranking signals
        reranked_model = fit(features[complete], quality[complete], good_chrf, RERANKED_SIGNALS)

    def served(f: np.ndarray) -> np.ndarray:
        return served_confidence(plain_model, reranked_model, f)

    tested = {key: gather(key, test_names, "test2016", seed=2) for key in runs}

    def measured(key: str) -> dict:
        """``measure`` of the served confidence on one search's test data, with its expected calibration error."""
        domain, others = tested[key]
        features, quality = stacked([(domain, {})])
        probability = served(features)
        return {**measure(probability, quality, {k: served(f) for k, (f, _) in others.items()}, good_chrf),
                "expected_calibration_error": round(expected_calibration_error(probability, quality >= good_chrf), 4)}

    test_domain, test_foreign = tested[default]
    features, quality = stacked([(test_domain, {})])
    confidence = served(features)
    confidence_by_set = {name: served(f) for name, (f, _) in test_domain.items()}
    baseline_index = SIGNALS.index("mean_log_prob")
    entry = {
        "good_chrf": good_chrf,
        "model": plain_model.to_card(),
        "fitted_on": {name: len(q) for name, (_, q) in {**fitted[default][0], **fitted[default][1]}.items()},
        "fitted_on_searches": {"model": plain_keys, **({"model_reranked": [default]} if reranked_model else {})},
        "measured_on": {name: len(q) for name, (_, q) in {**test_domain, **test_foreign}.items()},
        "search": {"beam_size": options.beam_size, "length_penalty": options.length_penalty,
                   "reranked_by": card.decoding_defaults.rerank.model if translator.reranker else None},
        "confidence": measured(default),
        "baseline_mean_log_prob": measure(features[:, baseline_index], quality,
                                          {k: f[:, baseline_index] for k, (f, _) in test_foreign.items()}, good_chrf),
        "per_test_set": {name: measure(confidence_by_set[name], q, {}, good_chrf)
                         for name, (_, q) in test_domain.items()},
        "deciles": deciles(confidence, quality, good_chrf),
        "other_searches": {key: measured(key) for key in runs if key != default},
    }
    if reranked_model is not None:
        entry["model_reranked"] = reranked_model.to_card()
    agreement = {name: reference_agreement([s for s, _ in sets[name]], q, confidence_by_set[name], good_chrf)
                 for name, (_, q) in test_domain.items()}
    if any(agreement.values()):
        entry["reference_agreement"] = {name: value for name, value in agreement.items() if value}
    card = write_card(model_dir, card.with_sections(confidence=entry))
    if plot is not None:
        plot_deciles(entry, card.id, plot)
    return card


def plot_deciles(entry: dict, model_id: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = entry["deciles"]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    x = np.arange(1, len(rows) + 1)
    axis.bar(x, [r["chrf"] for r in rows], color="#4c78a8", label="mean sentence chrF")
    axis.plot(x, [100 * r["confidence"] for r in rows], "o-", color="#f58518", label="mean confidence x 100")
    axis.plot(x, [100 * r["good"] for r in rows], "s--", color="#54a24b",
              label=f"% with chrF >= {entry['good_chrf']:g}")
    axis.set_xlabel("confidence decile (test sets)")
    axis.set_ylim(0, 100)
    axis.set_xticks(x)
    axis.set_title(f"{model_id}: translation quality by confidence decile")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(cards: list[ModelCard]) -> str:
    lines = ["| model | score | Spearman (chrF) | AUC good (chrF >= threshold) | ECE | AUC vs foreign inputs |",
             "|---|---|---:|---:|---:|---|"]
    for card in cards:
        entry = card.confidence or {}
        rows = [("confidence", entry["confidence"]),
                ("baseline: mean log-prob", entry["baseline_mean_log_prob"]),
                *((f"confidence, {name} search", stats) for name, stats in entry.get("other_searches", {}).items())]
        for label, stats in (row for row in rows if row[1] is not None):
            foreign = ", ".join(f"{k.removeprefix('roc_auc_vs_')} {v:.4f}" for k, v in stats.items()
                                if k.startswith("roc_auc_vs_"))
            ece = stats.get("expected_calibration_error")
            lines.append(f"| {card.id} | {label} | {stats['spearman_chrf']:.3f} | {stats['roc_auc_good']} "
                         f"| {'' if ece is None else f'{ece:.3f}'} | {foreign} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, nargs="+", required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"))
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--plot-dir", type=Path, help="write <model id>.png (quality by confidence decile) here")
    parser.add_argument("--max-per-set", type=int, help="use at most this many sentences of each set (quick runs)")
    parser.add_argument("--good-chrf", type=float, default=GOOD_CHRF, help="sentence chrF of a good translation")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cards = [calibrate(d, args.data_dir, args.mirror, args.plot_dir / f"{d.name}.png" if args.plot_dir else None,
                       args.max_per_set, args.good_chrf) for d in args.model_dir]
    print(markdown(cards))


if __name__ == "__main__":
    main()
