"""The ablation study's machinery on a tiny budget: trains variants, scores them, plots, writes the report."""

import json
import subprocess
import sys

import yaml

from tests.conftest import REPO


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
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"rnn+none", "gru+bahdanau"}
    for r in results.values():
        assert len(r["source_position_gradient"]) == 20 and len(r["val_loss_curve"]) == 1
        assert "<=10" in r["test2016"]["bleu_by_source_length"]
    report = (docs / "ablation.md").read_text()
    assert "| gru+bahdanau |" in report and "ablation/bleu_by_length.png" in report
    for image in ("bleu_by_length.png", "loss_and_gradients.png", "attention_gru_bahdanau.png"):
        assert (docs / "ablation" / image).stat().st_size > 1000
