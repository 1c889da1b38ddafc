"""How far the confidence's signals can go: the shipped fit beside fits with more data, other models, and fits
on the test data itself.

    python scripts/confidence_ceiling.py --model-dir models/de-en [--train-sample 4000] [--mirror DIR]

Every score is measured on the model's test sets as ``training.calibrate`` measures the confidence: Spearman
correlation with sentence chrF and ROC AUC for chrF >= 50, pooled and per test set. The scores:

- the baseline (mean token log-probability) and the shipped recipe (a logistic regression over the signals,
  fitted on the validation sets plus foreign inputs and random strings, as ``training.calibrate`` fits it);
- the same fit with a sample of training pairs added: more labels, but the model has learned those sentences,
  so their chrF is inflated (the script prints by how much, per corpus);
- a ridge regression on chrF itself (it ranks rather than separates good from bad) and gradient boosting on
  chrF (nonlinear; validation, foreign and training rows);
- ceilings: a logistic and a ridge regression fitted on the test sets themselves. Measured in-sample, they bound
  what any linear calibration of these signals can reach on these labels.

Decodes each set once, as served (the card's beam, reranked where the card asks for it).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.card import ModelCard, search_options
from inference.confidence import GOOD_CHRF, RERANKED_SIGNALS, SIGNALS
from inference.onnx_model import OnnxSeq2Seq
from inference.rerank import reranker_for
from inference.translator import SentenceTranslator
from training.calibrate import RANDOM_STRINGS, assess, fit, foreign_sets, random_strings
from training.evaluate import card_data, recipe_set_names

Labelled = tuple[np.ndarray, np.ndarray]  # signals [N, F], sentence chrF [N]


def training_samples(card: ModelCard, data_dir: Path, mirror: Path | None, size: int, seed: int = 0
                     ) -> tuple[dict[str, list], dict[str, list], list[str], list[str]]:
    """(validation and test sets, per corpus ``size`` distinct training pairs, validation names, test names)."""
    data = card_data(card, data_dir, mirror)
    samples, start, rng = {}, 0, random.Random(seed)
    for name, entry in data.report["corpora"].items():
        weighted = entry.get("train_pairs_weighted", 0)
        distinct = list(dict.fromkeys(data.train[start : start + weighted]))  # oversampling repeats pairs
        start += weighted
        if distinct:
            samples[f"{name}:train sample"] = rng.sample(distinct, min(size, len(distinct)))
    sets = {**data.valid, **data.test}
    return sets, samples, recipe_set_names(card, list(sets), "valid"), recipe_set_names(card, list(sets), "test")


def stack(parts: list[Labelled]) -> Labelled:
    return np.concatenate([f for f, _ in parts]), np.concatenate([q for _, q in parts])


def ceiling(model_dir: Path, data_dir: Path, mirror: Path | None = None, train_sample: int = 4000,
            max_per_set: int | None = None, good_chrf: float = GOOD_CHRF) -> dict:
    """{"memorization": {corpus: {"validation_chrf", "train_sample_chrf"}}, "scores": {name: {set: [Spearman,
    AUC]}}}, the sets being "pooled" and each test set."""
    model = OnnxSeq2Seq(model_dir)
    card = model.card
    translator = SentenceTranslator(model, model.tokenizer, source_language=card.source_language,
                                    reranker=reranker_for(card, model_dir))
    options = search_options(card)
    names = RERANKED_SIGNALS if translator.reranker is not None else SIGNALS
    sets, samples, valid_names, test_names = training_samples(card, data_dir, mirror, train_sample)

    def decoded(pairs: list) -> Labelled:
        features, quality = assess(translator, pairs[:max_per_set], options)
        return features[:, : len(names)], quality

    valid = {name: decoded(sets[name]) for name in valid_names}
    test = {name: decoded(sets[name]) for name in test_names}
    trained = {name: decoded(pairs) for name, pairs in samples.items()}
    foreign = [decoded(pairs) for pairs in foreign_sets(card, "val", data_dir, mirror).values()]
    foreign.append(decoded([(s, None) for s in random_strings(min(RANDOM_STRINGS, max_per_set or RANDOM_STRINGS), 1)]))

    shipped_x, shipped_y = stack([*valid.values(), *foreign])
    more_x, more_y = stack([*valid.values(), *foreign, *trained.values()])
    test_x, test_y = stack(list(test.values()))
    mean = np.nanmean(shipped_x, axis=0)  # a beam of one has no reranking signals: impute (rare)
    shipped_x, more_x, test_x = (np.where(np.isnan(x), mean, x) for x in (shipped_x, more_x, test_x))
    scale = shipped_x.std(0) + 1e-9

    def standardized(x: np.ndarray) -> np.ndarray:
        return (x - mean) / scale

    def logistic(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        regression = LogisticRegression(max_iter=5000).fit(standardized(x), y >= good_chrf)
        return lambda f: regression.predict_proba(standardized(f))[:, 1]

    def ridge(x: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        regression = Ridge(alpha=10.0).fit(standardized(x), y)
        return lambda f: regression.predict(standardized(f))

    boosted = HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                            min_samples_leaf=40, random_state=0).fit(more_x, more_y)
    scorers = {
        "baseline: mean log-prob": lambda f: f[:, names.index("mean_log_prob")],
        "shipped recipe: logistic, validation + foreign": fit(shipped_x, shipped_y, good_chrf, names).probability,
        "logistic, + training sample": logistic(more_x, more_y),
        "ridge on chrF, validation + foreign": ridge(shipped_x, shipped_y),
        "gradient boosting on chrF, + training sample": boosted.predict,
        "ceiling: logistic fitted on the test sets": logistic(test_x, test_y),
        "ceiling: ridge on chrF fitted on the test sets": ridge(test_x, test_y),
    }
    row_set = np.concatenate([np.full(len(quality), name) for name, (_, quality) in test.items()])
    rows = {"pooled": np.ones(len(test_y), bool), **{name: row_set == name for name in test}}

    def statistics(score: np.ndarray, subset: np.ndarray) -> list[float]:
        y = test_y[subset]
        return [round(float(spearmanr(score[subset], y)[0]), 3), round(float(roc_auc_score(y >= good_chrf, score[subset])), 3)]

    def mean_chrf(labelled: dict[str, Labelled], corpus: str) -> float:
        return round(float(np.mean(np.concatenate([q for n, (_, q) in labelled.items() if n.startswith(f"{corpus}:")]))), 2)

    corpora = sorted({name.split(":")[0] for name in trained} & {name.split(":")[0] for name in valid})
    memorization = {c: {"validation_chrf": mean_chrf(valid, c), "train_sample_chrf": mean_chrf(trained, c)}
                    for c in corpora}
    return {"memorization": memorization,
            "scores": {label: {subset: statistics(score(test_x), mask) for subset, mask in rows.items()}
                       for label, score in scorers.items()}}


def markdown(result: dict) -> str:
    sets = list(next(iter(result["scores"].values())))
    lines = ["| score | " + " | ".join(f"{s}: Spearman / AUC" for s in sets) + " |",
             "|---|" + "---:|" * len(sets)]
    lines += [f"| {label} | " + " | ".join(f"{v[0]:.3f} / {v[1]:.3f}" for v in by_set.values()) + " |"
              for label, by_set in result["scores"].items()]
    lines += ["", "| corpus | mean sentence chrF: validation | training sample |", "|---|---:|---:|"]
    lines += [f"| {c} | {m['validation_chrf']:.2f} | {m['train_sample_chrf']:.2f} |"
              for c, m in result["memorization"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=Path("data/multi30k"))
    parser.add_argument("--mirror", type=Path)
    parser.add_argument("--train-sample", type=int, default=4000, help="distinct training pairs per corpus")
    parser.add_argument("--max-per-set", type=int, help="use at most this many sentences of each set (quick runs)")
    args = parser.parse_args()
    print(markdown(ceiling(args.model_dir, args.data_dir, args.mirror, args.train_sample, args.max_per_set)))


if __name__ == "__main__":
    main()
