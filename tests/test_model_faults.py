"""Broken model directories: a clear start-up error naming the file, or (MT_SKIP_BROKEN_MODELS) the other
models keep serving. The corrupted-decoder case and the CLI's exit status are in test_api.py and test_cli.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from service_helpers import serve_in_thread, settings_for, wait_until

from inference.card import ModelCardError, read_card, write_card
from service.api import create_app
from service.registry import ModelLoadError, verify_models


def break_tokenizer(model: Path) -> str:
    (model / "sentencepiece.model").unlink()
    return r"sentencepiece\.model is missing"


def break_card_json(model: Path) -> str:
    (model / "model.json").write_text('{"id": "en-de", "files": ', encoding="utf-8")
    return r"model\.json is not valid JSON"


def remove_card(model: Path) -> str:
    (model / "model.json").unlink()
    return r"model\.json is missing"


def truncate_encoder(model: Path) -> str:
    encoder = model / read_card(model).files.encoder
    encoder.write_bytes(encoder.read_bytes()[:1000])
    return rf"{encoder.name} is corrupted"


def edit_card(model: Path, change) -> None:
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    change(card)
    (model / "model.json").write_text(json.dumps(card), encoding="utf-8")


def drop_card_field(model: Path) -> str:
    edit_card(model, lambda card: card.pop("vocabulary"))
    return r"model\.json: vocabulary is missing"


def misspelt_card_field(model: Path) -> str:
    edit_card(model, lambda card: card.update(decoding_default=card.pop("decoding_defaults")))
    return r"model\.json: decoding_default is not a known field"


def mistyped_card_value(model: Path) -> str:
    edit_card(model, lambda card: card["decoding_defaults"].update(beam_size="five"))
    return r"model\.json: decoding_defaults\.beam_size: Input should be a valid integer.*'five'"


def file_outside_the_model_directory(model: Path) -> str:
    edit_card(model, lambda card: card["files"].update(encoder="../de-en/encoder.onnx"))
    return r"model\.json: files\.encoder: String should match pattern"


def card_not_an_object(model: Path) -> str:
    (model / "model.json").write_text('["en-de"]', encoding="utf-8")
    return r"model\.json: expected a JSON object, got list"


def card_not_utf8(model: Path) -> str:
    (model / "model.json").write_bytes(b'{"id": "en-\xff"}')
    return r"model\.json is not UTF-8"


def file_without_checksum(model: Path) -> str:
    card = json.loads((model / "model.json").read_text(encoding="utf-8"))
    del card["sha256"][card["files"]["decoder"]]
    (model / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return r"model\.json lists \['decoder\.onnx'\] in 'files' without a SHA-256"


FAULTS = [break_tokenizer, break_card_json, remove_card, truncate_encoder, drop_card_field, misspelt_card_field,
          mistyped_card_value, file_outside_the_model_directory, card_not_an_object,
          card_not_utf8, file_without_checksum]


@pytest.fixture
def models(served_models_dir, tmp_path) -> Path:
    root = tmp_path / "models"
    shutil.copytree(served_models_dir, root)
    return root


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_a_broken_file_stops_start_up_naming_it(models, fault):
    pattern = fault(models / "en-de")
    with pytest.raises(ModelLoadError, match=rf"en-de.*{pattern}"):
        verify_models(settings_for(models))


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__)
def test_with_skip_broken_models_the_others_keep_serving(models, fault):
    pattern = fault(models / "en-de")
    verified, broken = verify_models(settings_for(models, skip_broken_models=True))
    assert [v.path.name for v in verified] == ["de-en"]
    assert list(broken) == ["en-de"] and re.search(pattern, broken["en-de"])


def test_an_unloadable_graph_with_a_valid_checksum(models):
    """A graph that passes its (re-signed) checksum but that onnxruntime cannot load: readiness stays 503 and
    names the file, or, with MT_SKIP_BROKEN_MODELS, the other models serve and /health/ready lists it."""
    model = models / "en-de"
    card = read_card(model)
    decoder = card.files.decoder
    (model / decoder).write_bytes(b"not an onnx graph")
    write_card(model, card)  # checksums match the garbage now

    with serve_in_thread(create_app(settings_for(models))) as url:
        wait_until(lambda: httpx.get(f"{url}/health/ready").json()["status"] == "failed", "loading to fail")
        ready = httpx.get(f"{url}/health/ready")
        assert ready.status_code == 503 and "en-de" in ready.json()["error"]
        assert decoder in ready.json()["error"]
        refused = httpx.post(f"{url}/translate", json={"q": "Hallo", "source": "de", "target": "en"})
        assert refused.status_code == 503 and "Retry-After" in refused.headers

    with serve_in_thread(create_app(settings_for(models, skip_broken_models=True))) as url:
        wait_until(lambda: httpx.get(f"{url}/health/ready").status_code == 200, "readiness")
        ready = httpx.get(f"{url}/health/ready").json()
        assert ready["models"] == ["de-en"] and decoder in ready["broken_models"]["en-de"]
        assert httpx.post(f"{url}/translate", json={"q": "Hallo", "source": "de", "target": "en"}).status_code == 200


@pytest.mark.parametrize("fault", ["empty", "nan_score", "nan_attention"])
def test_unusable_decoder_output_fails_only_its_request_with_a_clear_error(served_models_dir, fault):
    """An empty n-best list or a NaN from the model once ended in a 500 while encoding the response; now the
    request whose sentence it is gets a JSON error naming the problem, and other requests are answered."""
    import dataclasses

    from service_helpers import running_service

    poisoned = "Ein Hund rennt."
    with running_service(served_models_dir, max_wait_ms=0) as url:
        import inference.translator as pipeline

        original = pipeline.SentenceTranslator.finish

        def faulty(self, source, hypotheses, assess=True):
            results = original(self, source, hypotheses, assess)
            if self.tokenizer.decode(source[:-1]) != poisoned:
                return results
            if fault == "empty":
                return []
            if fault == "nan_score":
                return [dataclasses.replace(t, score=float("nan")) for t in results]
            return [dataclasses.replace(t, attention=t.attention * np.nan) for t in results]

        pipeline.SentenceTranslator.finish = faulty
        try:
            bad = httpx.post(f"{url}/v1/translate", json={"texts": [poisoned], "source": "de", "target": "en",
                                                          "return_attention": True}, timeout=60)
            good = httpx.post(f"{url}/v1/translate", json={"texts": ["Eine Katze schläft."], "source": "de",
                                                           "target": "en", "return_attention": True}, timeout=60)
        finally:
            pipeline.SentenceTranslator.finish = original
    assert bad.status_code == 500 and "produced no usable translation" in bad.json()["error"], bad.text
    assert good.status_code == 200 and good.json()["translations"][0]["text"]


def test_two_folders_serving_one_pair_are_an_error(models):
    shutil.copytree(models / "de-en", models / "de-en-copy")
    with pytest.raises(ModelLoadError, match="two model directories serve the same id or language pair"):
        verify_models(settings_for(models))


def test_cuda_without_cuda_fails_with_a_clear_message(served_models_dir):
    """onnxruntime here is the CPU build: MT_DEVICE=cuda stops start-up (exit 2) saying why, rather than
    serving 503 forever or falling back to the CPU silently."""
    import os
    import subprocess
    import sys

    environment = {**os.environ, "MT_MODELS_DIR": str(served_models_dir), "MT_DEVICE": "cuda"}
    result = subprocess.run([sys.executable, "-m", "service", "serve", "--port", "0"], capture_output=True, text=True,
                            env=environment, timeout=120)
    assert result.returncode == 2
    last = json.loads(result.stderr.strip().splitlines()[-1])
    assert last["level"] == "critical"
    assert last["msg"] == ("cannot start: MT_DEVICE=cuda but onnxruntime has no CUDAExecutionProvider "
                           "(install onnxruntime-gpu)")


def test_an_invalid_card_is_never_written(served_models_dir, tmp_path):
    model = tmp_path / "de-en"
    shutil.copytree(served_models_dir / "de-en", model)
    before = (model / "model.json").read_bytes()
    card = read_card(model).to_dict()
    card["decoding_defaults"]["beam_size"] = 0
    with pytest.raises(ModelCardError, match=r"not written.*decoding_defaults\.beam_size"):
        write_card(model, card)
    assert (model / "model.json").read_bytes() == before
