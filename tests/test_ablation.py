"""The ablation study's machinery on a tiny budget: trains variants, scores them, plots, writes the report."""

import json
import subprocess
import sys

import yaml

from tests.conftest import REPO
from training.ablation import compare, joined_pairs, verdict


def test_ablation_runs_end_to_end_on_a_tiny_budget(corpus_dir, tmp_path):
    config = yaml.safe_load((REPO / "training/configs/tiny.yaml").read_text())
    config["train"].update(epochs=1)
    config["data"].update(max_train_pairs=200)
    config["variants"] = [{"name": "rnn+none", "cell": "rnn", "attention": "none"},
                          {"name": "gru+bahdanau", "cell": "gru", "attention": "bahdanau"}]
    config_path = tmp_path / "ablation.yaml"
    config_path.write_text(yaml.safe_dump(config))
    out, docs = tmp_path / "out", tmp_path / "docs"
    result = subprocess.run(
        [sys.executable, "-m", "training.ablation", "--config", str(config_path), "--out", str(out),
         "--data-dir", str(corpus_dir), "--beam", "2", "--test-limit", "300", "--docs", str(docs)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())["variants"]
    assert set(results) == {"rnn+none", "gru+bahdanau"}
    for name, r in results.items():
        assert len(r["source_position_gradient"]) == 20 and len(r["val_loss_curve"]) == 1
        assert "<=10" in r["test2016"]["bleu_by_source_length"]
        assert r["joined_sentences"] == 150
        assert len((out / name / "joined.beam2.hyp").read_text().splitlines()) == 150
    report = (docs / "ablation.md").read_text()
    assert "| gru+bahdanau |" in report and "ablation/bleu_by_length.png" in report
    assert "Gradients, rnn+none:" in report
    for image in ("bleu_by_length.png", "loss_and_gradients.png", "attention_gru_bahdanau.png"):
        assert (docs / "ablation" / image).stat().st_size > 1000

    # A regenerated report keeps the hand-written discussion.
    (docs / "ablation.md").write_text(report.replace("## Plots", "## Discussion\n\nWritten by hand.\n\n## Plots"))
    rerun = subprocess.run(
        [sys.executable, "-m", "training.ablation", "--config", str(config_path), "--out", str(out),
         "--data-dir", str(corpus_dir), "--beam", "1", "--test-limit", "40", "--docs", str(docs)],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "## Discussion\n\nWritten by hand." in (docs / "ablation.md").read_text()


def test_claims_compare_variants_with_bootstrap_intervals():
    pairs = [(f"ein satz mit {'vielen ' * (i % 20)}worten {i}", f"a sentence with {'many ' * (i % 20)}words {i}")
             for i in range(200)]
    references = [t for _, t in pairs]
    damaged = [" ".join(t.split()[:3]) if len(t.split()) > 12 else t for t in references]  # long ones cut
    hypotheses = {
        "lstm+none": {"test2016": damaged, "joined": [" ".join(t.split()[:5]) for _, t in joined_pairs(pairs)]},
        "lstm+bahdanau": {"test2016": references, "joined": [t for _, t in joined_pairs(pairs)]},
    }
    comparisons = compare(hypotheses, pairs, samples=200)
    gain = comparisons["lstm+bahdanau vs lstm+none"]
    assert gain["short"]["delta"] == 0 and gain["long"]["delta"] > 50 and gain["long"]["low"] > 0
    assert gain["long_minus_short"]["low"] > 0 and gain["joined"]["low"] > 0
    assert verdict(gain["long_minus_short"]) == "held"
    assert verdict(comparisons["lstm+bahdanau vs lstm+none"]["short"]).startswith("not shown")
