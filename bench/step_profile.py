"""Where a continuous-batching step spends its time: onnxruntime vs the Python search around it.

    python -m bench.step_profile --model-dir models/de-en --active 32 --beam 5

Keeps ``--active`` sentences decoding (a finished one is replaced at once by the next sentence of the sample,
as the scheduler does under load) and times, for every step, the whole ``StepSearch.step`` call and, inside
it, the decoder call and admissions' encoder calls. The Python share is 1 - (decoder time / step time): the
search bookkeeping, retiring finished sentences and gathering rows. Admission (the encoder call plus merging the
newcomers' rows) is reported apart, since a step pays it only when sentences join.

``--io-binding both`` profiles the decoder's inputs kept as numpy arrays and as OrtValues decoded through I/O
binding (``inference.slots``), side by side, and prints the ratio of their step times.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import default_corpus, load_sentences, machine
from inference.card import read_card, search_options
from inference.onnx_model import OnnxSeq2Seq
from inference.search import StepSearch
from inference.slots import ArraySlots, SlotTensors
from inference.translator import SentenceTranslator


class TimedModel:
    """A StepModel that adds up the wall time of the calls it passes on."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.bos_id, self.eos_id = inner.bos_id, inner.eos_id
        self.step_s = 0.0
        self.supports_top_k = getattr(inner, "supports_top_k", False)

    def encode(self, src, lengths):
        return self.inner.encode(src, lengths)

    def step(self, prev_tokens, state, encoded):
        started = time.perf_counter()
        result = self.inner.step(prev_tokens, state, encoded)
        self.step_s += time.perf_counter() - started
        return result

    def step_top_k(self, prev_tokens, state, encoded, k):
        started = time.perf_counter()
        result = self.inner.step_top_k(prev_tokens, state, encoded, k)
        self.step_s += time.perf_counter() - started
        return result

    def slot_tensors(self) -> SlotTensors:
        """The inner model's slot tensors, with their decoder call timed (numpy arrays decode through ``step``)."""
        tensors = self.inner.slot_tensors()
        if isinstance(tensors, ArraySlots):
            return ArraySlots(self)
        decode = tensors.decode

        def timed_decode(*args, **kwargs):
            started = time.perf_counter()
            result = decode(*args, **kwargs)
            self.step_s += time.perf_counter() - started
            return result

        tensors.decode = timed_decode  # type: ignore[method-assign]
        return tensors


def profile(model_dir: Path, corpus: str, sentences: int, active: int, beam: int, steps: int,
            threads: int = 0, io_binding: bool = False) -> dict:
    card = read_card(model_dir)
    onnx = OnnxSeq2Seq(model_dir, threads=threads, io_binding=io_binding)
    translator = SentenceTranslator(onnx, onnx.tokenizer)
    sources = [translator.encode(s) for s in load_sentences(corpus, card.source_language, sentences)]
    timed = TimedModel(onnx)
    search = StepSearch(timed)
    options = search_options(card, beam)
    upcoming = iter(range(10**9))

    def admit(count: int) -> float:
        started = time.perf_counter()
        picks = [next(upcoming) for _ in range(count)]
        search.admit([sources[i % len(sources)] for i in picks], [options] * count, picks)
        return time.perf_counter() - started

    admit(active)
    for _ in range(20):  # warm-up
        search.step()
        admit(active - len(search))
    step_s, decoder_s, admit_s, rows = [], [], 0.0, []
    for _ in range(steps):
        timed.step_s = 0.0
        started = time.perf_counter()
        search.step()
        step_s.append(time.perf_counter() - started)
        decoder_s.append(timed.step_s)
        rows.append(search.rows)
        admit_s += admit(active - len(search))
    total, decoder = sum(step_s), sum(decoder_s)
    return {"machine": machine(), "model": card.id, "active_sentences": active, "beam": beam, "steps": steps,
            "io_binding": io_binding, "providers": onnx.decoder.get_providers(),
            "mean_rows": float(np.mean(rows)), "step_ms": 1000 * total / steps, "decoder_ms": 1000 * decoder / steps,
            "python_share": 1 - decoder / total, "admission_ms_per_step": 1000 * admit_s / steps}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("models/de-en"))
    parser.add_argument("--corpus", default=default_corpus(), help="sentence file with {lang} in its path")
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--active", type=int, default=32)
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: one per core)")
    parser.add_argument("--io-binding", choices=["off", "on", "both"], default="off",
                        help="decoder inputs as numpy arrays (off), OrtValues through I/O binding (on), or both")
    parser.add_argument("--out", type=Path, help="write step_profile.json here")
    args = parser.parse_args(argv)
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.io_binding]
    results = [profile(args.model_dir, args.corpus, args.sentences, args.active, args.beam, args.steps, args.threads,
                       io_binding) for io_binding in modes]
    for result in results:
        print(f"{result['active_sentences']} active sentences, beam {result['beam']} ({result['mean_rows']:.0f} "
              f"rows), {'OrtValues, I/O binding' if result['io_binding'] else 'numpy arrays'}: step "
              f"{result['step_ms']:.2f} ms, decoder {result['decoder_ms']:.2f} ms, Python share "
              f"{result['python_share']:.1%}; admission {result['admission_ms_per_step']:.2f} ms per step", flush=True)
    report = results[0] if len(results) == 1 else {
        "numpy": results[0], "io_binding": results[1],
        "step_ratio": results[1]["step_ms"] / results[0]["step_ms"],
        "step_and_admission_ratio": (results[1]["step_ms"] + results[1]["admission_ms_per_step"])
        / (results[0]["step_ms"] + results[0]["admission_ms_per_step"])}
    if len(results) > 1:
        print(f"I/O binding / numpy: step time {report['step_ratio']:.2f}x, step + admission "
              f"{report['step_and_admission_ratio']:.2f}x", flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "step_profile.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
