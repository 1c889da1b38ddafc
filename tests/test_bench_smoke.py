"""The benchmark and load-test scripts, run in tiny configurations on the tiny model so they do not rot.

No performance assertions: only that each script runs end to end and writes what it promises.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, multi30k_mirror

# Never import locust here: it monkey-patches the standard library with gevent on import, which would
# break the rest of the test session. It runs in subprocesses only.
pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")


@pytest.fixture(scope="module")
def corpus() -> str:
    mirror = multi30k_mirror()
    if mirror is None:
        pytest.skip("no Multi30k mirror: set MT_MULTI30K_MIRROR")
    return str(mirror / "val.{lang}.gz")


def test_flop_count_matches_the_architecture():
    from bench.common import decoder_step_flops, encoder_flops_per_token

    arch = {"vocab_size": 8000, "cell": "gru", "attention": "luong_general", "embedding_dim": 256,
            "encoder_hidden": 256, "encoder_layers": 1, "bidirectional": True, "decoder_hidden": 512,
            "decoder_layers": 1, "attention_dim": 256, "input_feeding": False}
    # GRU 2*3*512*(256+512), attention 2*10*512*2, readout 2*(512+512+256)*256, output 2*256*8000 + softmax 4*8000
    assert decoder_step_flops(arch, 10) == 2359296 + 20480 + 655360 + 4096000 + 32000
    # bi-GRU 2 directions * 2*3*256*(256+256), key projection 2*512*512
    assert encoder_flops_per_token(arch) == 1572864 + 524288


def test_engine_and_service_benchmarks_run(tiny_model_dir, tiny_run, corpus, tmp_path):
    from bench import run

    out = tmp_path / "bench"
    checks = run.main(["--model-dir", str(tiny_model_dir), "--run-dir", str(tiny_run), "--corpus", corpus,
                       "--sentences", "8", "--batch-sizes", "1,4", "--beams", "1,2", "--budget-s", "0.1",
                       "--gemm-sizes", "64", "--clients", "1,2", "--warmup-s", "0.2", "--duration-s", "0.5",
                       "--scheduling-args", "--configs batch --scenarios lone --offline-budget-s 0.1",
                       "--out", str(out), "--plots", str(tmp_path / "plots")])

    engine = json.loads((out / "engine.json").read_text())
    assert {(r["backend"], r["beam"], r["batch"]) for r in engine["rows"]} == {
        (backend, beam, batch) for backend in ("torch", "onnx", "onnx-int8") for beam in (1, 2) for batch in (1, 4)}
    assert all(r["sentences"] > 0 and r["generated_tokens"] > 0 for r in engine["rows"])
    service = json.loads((out / "service.json").read_text())
    assert {(r["config"], r["clients"]) for r in service["rows"]} == {(c, n) for c in ("on", "off") for n in (1, 2)}
    assert all(r["errors"] == 0 for r in service["rows"])
    # No 32-client point in this configuration: two of the three service targets apply, and the lone client's
    # target of bench.scheduling.
    assert len(checks) == 3
    for name in ("engine.csv", "service.csv", "scheduling.json", "summary.md", "engine_throughput.png",
                 "service.png"):
        assert (out / name).stat().st_size > 0
    assert "## Scheduling" in (out / "summary.md").read_text()
    assert (tmp_path / "plots" / "service.png").exists()


def test_scheduling_benchmark_runs(tiny_model_dir, corpus, tmp_path):
    from bench import scheduling

    out = tmp_path / "scheduling"
    summary = scheduling.main([
        "--model-dir", str(tiny_model_dir), "--corpus", corpus, "--sentences", "16", "--configs", "batch",
        "--beams", "1,2", "--warmup-s", "0.1", "--duration-s", "0.3", "--single-clients", "2", "--list-clients", "1",
        "--list-size", "4", "--saturated-clients", "2", "--mixed-clients", "2", "--bulk-sentences", "40",
        "--bulk-connections", "2", "--offline-batch-sizes", "4,8", "--offline-budget-s", "0.1", "--out", str(out)])

    assert {(r["point"], r["kind"], r["beam"]) for r in summary["rows"]} == {
        ("singles", "single", 1), ("lists", "list", 1), ("singles", "single", 2), ("lists", "list", 2),
        ("saturated", "single", 1), ("saturated", "single", 2), ("lone", "single", 1), ("idle", "single", None),
        ("loaded", "single", None), ("loaded", "bulk", None), ("mixed", "short", None), ("mixed", "long", None)}
    assert all(r["errors"] == 0 for r in summary["rows"]), [r["first_error"] for r in summary["rows"]]
    assert summary["workload"]["bulk_request"]["sentences"] == 20
    assert summary["workload"]["mixed"]["long_tokens_mean"] >= 40
    # Two beams of singles and saturated, and (where a request finished in so short a window) the lone client and
    # fairness; mixed needs both schedulers.
    assert 4 <= len(summary["targets"]) <= 6
    for name in ("scheduling.json", "scheduling.csv", "scheduling.md"):
        assert (out / name).stat().st_size > 0


def test_load_test_runs_the_locust_scenario(served_models_dir, corpus, tmp_path):
    out = tmp_path / "loadtest"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "loadtest.run", "--models-dir", str(served_models_dir), "--users", "1,3",
                    "--duration", "3", "--out", str(out), "--", "--corpus", corpus, "--mix", "libre=1,native=1"],
                   cwd=REPO, env=env, check=True, timeout=300)
    with open(out / "summary.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["users"]) for r in rows] == [1, 3]
    assert all(int(r["requests"]) > 0 and int(r["failures"]) == 0 for r in rows)
    # Both APIs were exercised (over both steps: a loaded machine may send only a few requests per step).
    stats = {r["Name"] for step in ("u001", "u003") for r in csv.DictReader(open(out / f"{step}_stats.csv", newline=""))}
    assert {"/translate [text]", "/v1/translate [text]"} <= stats
    for name in ("summary.md", "throughput.png", "latency.png"):
        assert (out / name).stat().st_size > 0


def test_locust_scenario_parses_its_options():
    check = textwrap.dedent("""
        import locustfile as lf
        assert lf.parse_weights("a=3,b,c=0") == {"a": 3.0, "b": 1.0}
        assert lf.parse_range("2-8", int) == (2, 8)
        try:
            lf.parse_weights("nonsense=1", lf.KINDS)
        except ValueError:
            pass
        else:
            raise AssertionError("unknown kind accepted")
        assert lf.check_answer("libre_list", ["a", "b"], {"translatedText": ["x", "y"]}) is None
        assert lf.check_answer("libre", ["a"], {"translatedText": " "}) is not None
        assert lf.check_answer("native", ["a"], {"translations": []}) is not None
    """)
    subprocess.run([sys.executable, "-c", check], cwd=REPO / "loadtest", check=True, timeout=120)
