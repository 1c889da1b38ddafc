"""End to end on real data: train a tiny model, export it, check parity, decode with the service's code."""

import ast
import asyncio
import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from inference.card import read_card, verify_files
from inference.onnx_model import OnnxGraphs, OnnxSeq2Seq
from inference.search import SearchOptions
from inference.translator import SentenceTranslator
from training.export import export_graphs, greedy_agreement, logprob_parity
from training.model import ModelConfig, Seq2Seq


def test_training_logs_metrics_and_checkpoints(tiny_run):
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    for key in ("val_loss", "val_bleu", "grad_norm_mean", "grad_norm_max", "target_tokens_per_s", "lr"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert (tiny_run / "best.pt").exists() and (tiny_run / "last.pt").exists()


def test_training_resumes_from_its_last_checkpoint(tiny_run, corpus_dir, tmp_path):
    import shutil

    from training.config import load_config
    from training.train import train
    from tests.conftest import REPO

    run_dir = tmp_path / "resumed"
    shutil.copytree(tiny_run, run_dir)
    config = load_config(REPO / "training/configs/tiny.yaml", {"train.epochs": 4})
    state = train(config, run_dir, corpus_dir)
    assert state["epoch"] == 4
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 4


def test_fine_tuning_starts_from_another_runs_weights_and_vocabulary(tiny_run, corpus_dir, tmp_path):
    """train.init_from: the new run's first epoch already has the trained run's low loss (fresh weights start
    far higher), it trains with the trained run's SentencePiece model, and its epochs count from 1."""
    from training.config import load_config
    from training.train import train
    from tests.conftest import REPO

    run_dir = tmp_path / "fine-tuned"
    config = load_config(REPO / "training/configs/tiny.yaml",
                         {"train.epochs": 1, "train.lr": 0.001, "train.init_from": str(tiny_run / "epoch-3.pt")})
    assert train(config, run_dir, corpus_dir)["epoch"] == 1
    assert (run_dir / "sentencepiece.model").read_bytes() == (tiny_run / "sentencepiece.model").read_bytes()
    trained = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    tuned = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in tuned] == [1]
    assert tuned[0]["train_loss"] < trained[0]["train_loss"] - 0.5
    assert tuned[0]["train_loss"] < trained[-1]["train_loss"] + 0.2
    out = tmp_path / "models" / "de-en"
    subprocess.run([sys.executable, "-m", "training.export", "--run-dir", str(run_dir), "--out", str(out),
                    "--data-dir", str(corpus_dir)], check=True, cwd=REPO, capture_output=True)
    assert read_card(out).training["initialized_from"] == str(tiny_run / "epoch-3.pt")  # the card names its parent


@pytest.mark.parametrize("override, message", [
    ({"model.decoder_hidden": 64}, "differs from this config"),
    ({}, "is another vocabulary"),
])
def test_fine_tuning_refuses_weights_that_do_not_fit(tiny_run, corpus_dir, tmp_path, override, message):
    from training.config import load_config
    from training.corpus_config import ConfigError
    from training.train import train
    from tests.conftest import REPO

    run_dir = tmp_path / "fine-tuned"
    run_dir.mkdir()
    if not override:  # a run directory that already holds another vocabulary
        (run_dir / "sentencepiece.model").write_bytes(b"another model")
    config = load_config(REPO / "training/configs/tiny.yaml",
                         {"train.epochs": 1, "train.init_from": str(tiny_run / "best.pt"), **override})
    with pytest.raises(ConfigError, match=message):
        train(config, run_dir, corpus_dir)


def test_exported_model_card_and_files(tiny_model_dir):
    card = read_card(tiny_model_dir)
    verify_files(tiny_model_dir, card)
    assert card.id == "de-en" and card.source_language == "de" and card.target_language == "en"
    assert card.parity["max_abs_logprob_diff"] <= 1e-4
    assert card.parity["greedy_identical"] == card.parity["sentences"] == 200
    assert set(card.to_dict()["files"]) == {"encoder", "decoder", "decoder_int8", "tokenizer"}
    assert card.architecture["parameters"] > 0 and "licence" in card.training


def test_onnx_decoding_through_the_service_pipeline(tiny_model_dir):
    model = OnnxSeq2Seq(tiny_model_dir)
    translator = SentenceTranslator(model, model.tokenizer)
    sentences = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee auf einer großen Wiese."]
    results = translator.translate(sentences, SearchOptions(beam_size=3, n_best=2, return_attention=True))
    for nbest in results:
        assert len(nbest) == 2 and nbest[0].score >= nbest[1].score
        best = nbest[0]
        assert best.attention.shape == (len(best.target_tokens), len(best.source_tokens))
        np.testing.assert_allclose(best.attention.sum(axis=1), 1.0, atol=1e-4)


def test_int8_serving_matches_fp32_closely(tiny_model_dir, corpus_dir):
    """MT_QUANTIZED=true serves through decoder.int8.onnx, and its greedy outputs on 200 validation sentences
    mostly equal fp32's (198/200 measured on the tiny model); the scores differ, so it really is another graph."""
    from service_helpers import started_engine

    from service.engine import TranslationJob
    from training.data import load_pairs

    texts = [s for s, _ in load_pairs(corpus_dir, "val", "de", "en", clean=False)[:200]]
    outputs = {}
    for quantized in ("false", "true"):
        with started_engine(tiny_model_dir.parent, quantized=quantized, max_texts=len(texts)) as engine:
            assert engine.registry.models["de-en"].quantized == (quantized == "true")
            result = asyncio.run(engine.translate(TranslationJob(texts=texts, source="de", target="en", beam_size=1)))
            outputs[quantized] = [(t.text, t.score) for t in result.translations]
    same = sum(a[0] == b[0] for a, b in zip(outputs["false"], outputs["true"]))
    print(f"int8 == fp32 greedy: {same}/{len(texts)}")
    assert same >= 0.9 * len(texts)
    assert any(abs(a[1] - b[1]) > 1e-6 for a, b in zip(outputs["false"], outputs["true"]))


@pytest.mark.parametrize("allowed_drop, shipped", [(100.0, True), (-1.0, False)])
def test_evaluation_keeps_the_int8_decoder_only_within_its_bleu_budget(tiny_model_dir, corpus_dir, tmp_path,
                                                                      monkeypatch, allowed_drop, shipped):
    import shutil

    import training.evaluate as evaluate

    model_dir = tmp_path / "de-en"
    shutil.copytree(tiny_model_dir, model_dir)
    monkeypatch.setattr(evaluate, "INT8_MAX_BLEU_DROP", allowed_drop)
    card = evaluate.evaluate(model_dir, corpus_dir, ["multi30k:test2016"], [1])
    assert card.int8["shipped"] is shipped and card.int8["test_set"] == "multi30k:test2016"
    assert (card.files.decoder_int8 is not None) is shipped and (model_dir / "decoder.int8.onnx").exists() is shipped
    verify_files(model_dir, read_card(model_dir))


@pytest.mark.parametrize("cell,attention,input_feeding", [
    ("lstm", "bahdanau", False), ("rnn", "none", False), ("gru", "luong_dot", True), ("lstm", "luong_general", False),
])
def test_every_architecture_exports_with_parity(tmp_path, cell, attention, input_feeding):
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, cell=cell, attention=attention, embedding_dim=16, encoder_hidden=8,
                         decoder_hidden=16, attention_dim=8, input_feeding=input_feeding, decoder_layers=2,
                         encoder_layers=2)
    model = Seq2Seq(config).eval()
    export_graphs(model, tmp_path)
    onnx_model = OnnxGraphs(ort.InferenceSession(str(tmp_path / "encoder.onnx")),
                            ort.InferenceSession(str(tmp_path / "decoder.onnx")), bos_id=2, eos_id=3)
    rng = np.random.default_rng(0)
    sources = [list(rng.integers(4, 50, size=n)) + [3] for n in (1, 3, 6, 9, 12, 2, 7)]
    assert logprob_parity(model, onnx_model, sources, batch_size=4) <= 1e-4
    assert greedy_agreement(model, onnx_model, sources, batch_size=4) == len(sources)


def test_checkpoint_averaging_exports_with_parity(tiny_run, corpus_dir, tmp_path):
    from training.average import available_epochs, average_weights
    from training.data import load_pairs
    from training.export import export_run

    assert available_epochs(tiny_run) == [2, 3]  # keep_epochs: 2 deletes older ones
    first, second = (torch.load(tiny_run / f"epoch-{n}.pt", weights_only=False) for n in (2, 3))
    averaged = average_weights([tiny_run / "epoch-2.pt", tiny_run / "epoch-3.pt"])
    name = "decoder.out_proj.weight" if "decoder.out_proj.weight" in averaged["model"] else next(
        k for k, v in averaged["model"].items() if v.is_floating_point())
    assert torch.allclose(averaged["model"][name], (first["model"][name] + second["model"][name]) / 2)
    assert averaged["averaged_epochs"] == [2, 3]
    torch.save({**averaged, "val_bleu": 0.0}, tmp_path / "averaged.pt")
    run = tmp_path / "run"
    import shutil
    shutil.copytree(tiny_run, run)
    shutil.copy(tmp_path / "averaged.pt", run / "averaged.pt")
    sources = [s for s, _ in load_pairs(corpus_dir, "val", "de", "en", clean=False)[:50]]
    card = export_run(run, tmp_path / "models" / "de-en", "de", "en", sources, checkpoint_name="averaged.pt")
    assert card.training["exported_weights"] == "average of epochs [2, 3]"
    assert card.parity["greedy_identical"] == 50


def test_export_refuses_a_graph_that_does_not_match_pytorch(tiny_run, corpus_dir, tmp_path, monkeypatch):
    """The parity check is shown to catch a mismatch: one decoder weight nudged by 1e-3 in the ONNX graph
    makes export refuse, report the difference, and leave no model directory behind."""
    import onnx
    from onnx import numpy_helper

    import training.export as export
    from training.data import load_pairs

    real_export_graphs = export.export_graphs

    def perturbed_export_graphs(model, out_dir):
        real_export_graphs(model, out_dir)
        path = out_dir / "decoder.onnx"
        graph = onnx.load(str(path))
        largest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(largest).copy()
        values.flat[0] += 1e-3 * max(1.0, float(np.abs(values).max()))
        largest.CopyFrom(numpy_helper.from_array(values, largest.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(export, "export_graphs", perturbed_export_graphs)
    sources = [s for s, _ in load_pairs(corpus_dir, "val", "de", "en", clean=False)[:100]]
    out = tmp_path / "models" / "de-en"
    with pytest.raises(export.ParityError, match=r"does not match PyTorch: .*max_abs_logprob_diff") as refused:
        export.export_run(tiny_run, out, "de", "en", sources)
    assert not out.exists() and not list(out.parent.glob(".*"))  # staging removed too
    reported = ast.literal_eval(str(refused.value).split(": ", 1)[1])  # the parity dict, as printed
    assert reported["max_abs_logprob_diff"] > reported["tolerance"]


def test_evaluation_refuses_sets_that_differ_from_the_recipe_at_export(tiny_model_dir, corpus_dir, tmp_path):
    import json
    import shutil

    import training.evaluate as evaluate
    from training.config import load_config
    from training.datasets import prepare_data
    from tests.conftest import REPO

    config = load_config(REPO / "training/configs/tiny.yaml")
    data = prepare_data(config.sources, "de", "en", config.data.cleaning_rules(), corpus_dir)
    model_dir = tmp_path / "de-en"
    shutil.copytree(tiny_model_dir, model_dir)
    card_path = model_dir / "model.json"
    card = json.loads(card_path.read_text())
    card["training"]["evaluation_sets_sha256"] = data.fingerprints()
    card_path.write_text(json.dumps(card))
    assert set(evaluate.evaluation_sets(read_card(model_dir), corpus_dir, None)) == {"multi30k:val", "multi30k:test2016"}
    card["training"]["evaluation_sets_sha256"]["multi30k:test2016"] = "0" * 64
    card_path.write_text(json.dumps(card))
    with pytest.raises(SystemExit, match="multi30k:test2016 rebuilt from the card's recipe differs"):
        evaluate.evaluation_sets(read_card(model_dir), corpus_dir, None)
