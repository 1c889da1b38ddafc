"""``python -m service translate|serve`` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO


def run(args: list[str], models_dir, stdin: str | None = None, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "MT_MODELS_DIR": str(models_dir), "MT_DEVICE": "cpu", "MT_THREADS": "1", **env}
    return subprocess.run([sys.executable, "-m", "service", *args], input=stdin, capture_output=True, text=True,
                          cwd=REPO, env=environment, timeout=120)


def test_translate_arguments_one_line_each(served_models_dir):
    result = run(["translate", "--source", "de", "--target", "en", "--beam", "2",
                  "Ein Hund rennt. Eine Katze schläft.", "Zwei Kinder."], served_models_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(lines)
    assert lines[0] != "Ein Hund rennt. Eine Katze schläft."


def test_translate_stdin_lines_with_json_output(served_models_dir):
    result = run(["translate", "-s", "auto", "-t", "en", "--json", "--n-best", "2"], served_models_dir,
                 stdin="Ein Hund rennt.\n\nEine Frau singt.\n")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 3
    assert rows[1] == {"text": "", "score": None, "source_language": "de", "alternatives": []}
    assert rows[0]["text"] and rows[0]["score"] < 0 and rows[0]["source_language"] == "de"
    assert all(a["score"] <= rows[0]["score"] for a in rows[0]["alternatives"])


def test_translate_reports_unsupported_pairs(served_models_dir):
    result = run(["translate", "-s", "de", "-t", "fr", "Hallo"], served_models_dir)
    assert result.returncode == 1
    assert "'fr' is not supported" in result.stderr and result.stdout == ""


@pytest.fixture
def corrupted_models(served_models_dir, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(served_models_dir / "de-en", root / "de-en")
    tokenizer = root / "de-en" / "sentencepiece.model"
    tokenizer.write_bytes(tokenizer.read_bytes() + b"tampered")
    return root


def test_commands_refuse_corrupted_models_naming_the_file(corrupted_models):
    translated = run(["translate", "-s", "de", "-t", "en", "Hallo"], corrupted_models)
    assert translated.returncode == 2 and "sentencepiece.model is corrupted" in translated.stderr
    served = run(["serve", "--port", "0"], corrupted_models)
    assert served.returncode == 2
    record = json.loads(served.stderr.strip().splitlines()[-1])
    assert record["level"] == "critical" and "sentencepiece.model is corrupted" in record["msg"]


@pytest.mark.parametrize("env, variable", [
    ({"MT_API_KEYS": '["k3y-that-is-secret", '}, "MT_API_KEYS"),
    ({"MT_API_KEYS": '["k3y-that-is-secret", 42, {"a": 1}]'}, "MT_API_KEYS"),
    ({"MT_RATE_LIMIT_PER_MINUTE": "k3y-that-is-secret"}, "MT_RATE_LIMIT_PER_MINUTE"),
])
def test_bad_settings_are_one_line_naming_the_variable_and_never_the_value(env, variable, tmp_path):
    for command in (["serve", "--port", "0"], ["translate", "-s", "de", "-t", "en", "Hallo"]):
        result = run(command, tmp_path, **env)
        assert result.returncode == 2
        assert result.stderr.startswith(f"error: {variable}: ") and result.stderr.count("\n") == 1, result.stderr
        assert "k3y-that-is-secret" not in result.stderr and "Traceback" not in result.stderr
