"""Shared fixtures: the Multi30k mirror and a tiny model trained and exported once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODELS = REPO / "models"


def multi30k_mirror() -> Path | None:
    """$MT_MULTI30K_MIRROR, else the shared copy beside the checkout (this project's machines and CI)."""
    candidates = [os.environ.get("MT_MULTI30K_MIRROR"), REPO.parent / "shared" / "data" / "multi30k"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "train.de.gz").exists():
            return Path(candidate)
    return None


def require_mirror() -> Path:
    """The mirror; without one, skip the test, except in CI (CI=true), where every model test must run."""
    mirror = multi30k_mirror()
    if mirror is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI without a Multi30k mirror: set MT_MULTI30K_MIRROR (the model tests would all skip)")
        pytest.skip("no Multi30k mirror: set MT_MULTI30K_MIRROR")
    return mirror


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    from training.data import fetch_multi30k

    return fetch_multi30k(tmp_path_factory.mktemp("multi30k"), require_mirror())


@pytest.fixture(scope="session")
def tiny_run(corpus_dir, tmp_path_factory) -> Path:
    """Train the tiny config for a few epochs (seconds) and return its run directory."""
    from training.config import load_config
    from training.train import train

    run_dir = tmp_path_factory.mktemp("tiny-run")
    train(load_config(REPO / "training" / "configs" / "tiny.yaml"), run_dir, corpus_dir)
    return run_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_run, corpus_dir, tmp_path_factory) -> Path:
    """The tiny run exported (with parity check and int8 decoder) to a model directory named de-en."""
    from training.data import load_pairs
    from training.export import export_run

    out = tmp_path_factory.mktemp("tiny-models") / "de-en"
    sources = [s for s, _ in load_pairs(corpus_dir, "val", "de", "en", clean=False)[:200]]
    export_run(tiny_run, out, "de", "en", sources, quantize=True)
    return out


@pytest.fixture(scope="session")
def served_models_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A models folder for the service: de-en (the tiny model) and en-de (a relabelled copy of it).

    model.json's checksums cover the other files only, so editing the card keeps the copy valid.
    """
    import json
    import shutil

    root = tmp_path_factory.mktemp("served") / "models"
    shutil.copytree(tiny_model_dir, root / "de-en")
    shutil.copytree(tiny_model_dir, root / "en-de")
    card_path = root / "en-de" / "model.json"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card.update(id="en-de", source_language="en", target_language="de")
    card_path.write_text(json.dumps(card, indent=2), encoding="utf-8")
    return root
