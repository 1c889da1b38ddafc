"""What both benchmarks share: the machine, its GEMM speed, the model's FLOPs, the sentences, small helpers."""

from __future__ import annotations

import csv
import gzip
import os
import platform
import random
import subprocess
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


# ---- the machine ------------------------------------------------------------------------------------------------

def machine() -> dict:
    """nproc, the CPU model (lscpu), the SIMD extensions that matter for GEMM, library versions."""
    info = {"nproc": os.cpu_count(), "cpu": platform.processor() or "?", "python": platform.python_version(),
            "numpy": np.__version__}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except OSError:
        lscpu = ""
    for line in lscpu.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            info["cpu"] = value.strip()
        elif key.strip() == "Flags":
            flags = set(value.split())
            info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni")
                                    if f in flags)
    for module in ("onnxruntime", "torch"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            pass
    return info


def gemm_gflops(sizes: tuple[int, ...] = (256, 512, 1024, 2048), seconds: float = 0.4) -> dict:
    """float32 numpy matmul (all cores, numpy's BLAS): best GFLOP/s per square size, and the peak."""
    rng = np.random.default_rng(0)
    result = {}
    for n in sizes:
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        a @ b  # warm-up
        best, started = 0.0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            a @ b
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
        result[n] = round(best, 1)
    return {"by_size": result, "peak": max(result.values())}


# ---- model arithmetic -------------------------------------------------------------------------------------------

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def decoder_step_flops(arch: dict, source_length: float) -> float:
    """FLOPs of one decoder step for one row (multiply-add = 2), from model.json's architecture.

    Counts the matrix products (RNN cell, attention, readout, output projection) and the log-softmax;
    element-wise gate arithmetic is left out (< 1%).
    """
    e, h, m, v = arch["embedding_dim"], arch["decoder_hidden"], arch["encoder_hidden"] * (
        2 if arch["bidirectional"] else 1), arch["vocab_size"]
    r, gates, attention = e, GATES[arch["cell"]], arch["attention"]
    rnn_in = e + (m if attention in ("bahdanau", "none") else 0) + (r if arch.get("input_feeding") else 0)
    flops = 0.0
    for layer in range(arch["decoder_layers"]):
        flops += 2 * gates * h * ((rnn_in if layer == 0 else h) + h)
    s = source_length
    if attention == "bahdanau":
        a = arch["attention_dim"]
        flops += 2 * h * a + 3 * s * a + 2 * s * m  # query projection, tanh(keys + query) . energy, context
    elif attention in ("luong_general", "luong_dot"):
        flops += 2 * s * h + 2 * s * m  # scores against the precomputed keys, context
    flops += 2 * (h + m + e) * r  # readout
    flops += 2 * r * v + 4 * v  # output projection, log-softmax
    return flops


def encoder_flops_per_token(arch: dict) -> float:
    """Encoder FLOPs per source token: the (bi)RNN layers and the attention-key projection."""
    e, hid = arch["embedding_dim"], arch["encoder_hidden"]
    directions = 2 if arch["bidirectional"] else 1
    m, gates = hid * directions, GATES[arch["cell"]]
    flops = 0.0
    for layer in range(arch["encoder_layers"]):
        flops += directions * 2 * gates * hid * ((e if layer == 0 else m) + hid)
    if arch["attention"] == "bahdanau":
        flops += 2 * m * arch["attention_dim"]
    elif arch["attention"] == "luong_general":
        flops += 2 * m * arch["decoder_hidden"]
    return flops


def bridge_flops(arch: dict) -> float:
    """Once per sentence: encoder summary -> initial decoder state."""
    m = arch["encoder_hidden"] * (2 if arch["bidirectional"] else 1)
    states = arch["decoder_layers"] * (2 if arch["cell"] == "lstm" else 1)
    return 2 * m * states * arch["decoder_hidden"] * (2 if arch["cell"] == "lstm" else 1)


# ---- sentences --------------------------------------------------------------------------------------------------

def default_corpus() -> str | None:
    """$MT_MULTI30K_MIRROR/val.{lang}.gz, else the shared Multi30k copy beside the checkout."""
    for directory in (os.environ.get("MT_MULTI30K_MIRROR"), str(REPO.parent / "shared" / "data" / "multi30k")):
        if directory and Path(directory).is_dir():
            return str(Path(directory) / "val.{lang}.gz")
    return None


def load_sentences(template: str | None, lang: str, count: int, seed: int = 0) -> list[str]:
    """``count`` sentences drawn without replacement (fixed seed) from the corpus file for ``lang``."""
    if not template:
        raise FileNotFoundError("no corpus: pass --corpus PATH_WITH_{lang} or set MT_MULTI30K_MIRROR")
    path = Path(template.format(lang=lang))
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        sentences = [line.strip() for line in handle if line.strip()]
    if not sentences:
        raise ValueError(f"{path} holds no sentences")
    rng = random.Random(seed)
    if count <= len(sentences):
        return rng.sample(sentences, count)
    return [rng.choice(sentences) for _ in range(count)]


# ---- output -----------------------------------------------------------------------------------------------------

def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields += [key for key in row if key not in fields]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """rows -> a markdown table of the given (key, header) columns; floats get sensible precision."""
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header for _, header in columns) + " |",
             "|" + "|".join("---:" if i else "---" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    return "\n".join(lines)
