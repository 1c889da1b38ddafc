"""An exported model directory loaded into onnxruntime: encoder and decoder-step sessions plus tokenizer."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import sentencepiece as spm

from inference.card import ModelCardError, read_card, verify_files
from inference.slots import ArraySlots, OrtValueSlots, SlotTensors
from inference.step_model import TOP_K_INPUT, TOP_K_OUTPUTS, Encoded

log = logging.getLogger(__name__)

def resolve_providers(device: str) -> list[str]:
    """'cpu' | 'cuda' | 'auto' -> onnxruntime execution providers (CUDA only when really available)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError("MT_DEVICE=cuda but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "auto":
        return (["CUDAExecutionProvider", "CPUExecutionProvider"] if "CUDAExecutionProvider" in available
                else ["CPUExecutionProvider"])
    raise ValueError(f"device must be cpu, cuda or auto, got {device!r}")


def session_options(threads: int = 0) -> ort.SessionOptions:
    """Per-session thread pools that do not spin when idle.

    Encoder and decoder run one after the other; with spinning on, the idle pool of one steals the cores
    from the other (measured: half the throughput at batch 1-8 on 2 cores).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxGraphs:
    """Implements ``inference.step_model.StepModel`` over an encoder and a decoder-step onnxruntime session.

    ``io_binding``: the steppable search keeps the decoder's inputs as OrtValues on the session's device and decodes
    through I/O binding (``inference.slots.OrtValueSlots``); None turns it on where the decoder runs on CUDA.
    """

    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, bos_id: int, eos_id: int,
                 pad_id: int = 0, io_binding: bool | None = None) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.bos_id, self.eos_id, self.pad_id = bos_id, eos_id, pad_id
        self._decoder_inputs = {i.name for i in decoder.get_inputs()}
        self._decoder_outputs = [o.name for o in decoder.get_outputs()]
        self.supports_top_k = TOP_K_INPUT in self._decoder_inputs  # graphs exported before it: the search sorts
        self._step_outputs = [name for name in self._decoder_outputs if name not in TOP_K_OUTPUTS]
        self.top_k_outputs = TOP_K_OUTPUTS + [name for name in ("new_state", "attention")
                                              if name in self._decoder_outputs]
        self.io_binding = decoder.get_providers()[0] == "CUDAExecutionProvider" if io_binding is None else io_binding

    def slot_tensors(self) -> SlotTensors:
        """Where ``inference.search.StepSearch`` keeps this model's per-slot decoder inputs. OrtValueSlots asks the
        graph for each row's k best candidates, so graphs exported before the TopK keep numpy arrays."""
        return OrtValueSlots(self) if self.io_binding and self.supports_top_k else ArraySlots(self)

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> Encoded:
        memory, keys, mask, state = self.encoder.run(None, {"src_tokens": src, "src_lengths": lengths})
        return Encoded(memory, keys, mask, state)

    def _feeds(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded) -> dict[str, np.ndarray]:
        feeds = {"prev_tokens": prev_tokens, "state": state, "memory": encoded.memory,
                 "memory_keys": encoded.keys, "memory_mask": encoded.mask}
        # The exporter drops inputs a variant does not read (e.g. keys for dot attention).
        return {k: v for k, v in feeds.items() if k in self._decoder_inputs}

    def step(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded):
        feeds = self._feeds(prev_tokens, state, encoded)
        if TOP_K_INPUT in self._decoder_inputs:
            feeds[TOP_K_INPUT] = np.ones(1, np.int64)
        outputs = dict(zip(self._step_outputs, self.decoder.run(self._step_outputs, feeds)))
        return outputs["log_probs"], outputs["new_state"], outputs.get("attention")

    def step_top_k(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded, k: int):
        """Like ``step``, but returns each row's k best log-probs [B, k] and tokens [B, k] (sorted, best first)
        instead of the log-probs [B, V]: the graph's TopK finds them, and the [B, V] array stays in onnxruntime."""
        feeds = self._feeds(prev_tokens, state, encoded)
        feeds[TOP_K_INPUT] = np.array([k], np.int64)
        values, tokens, new_state, *attention = self.decoder.run(self.top_k_outputs, feeds)
        return values, tokens, new_state, attention[0] if attention else None


class OnnxSeq2Seq(OnnxGraphs):
    """One exported model directory: checksum-verified graphs, tokenizer and model card."""

    def __init__(self, model_dir: Path, providers: list[str] | None = None, quantized: bool = False,
                 threads: int = 0, verify: bool = True, io_binding: bool | None = None) -> None:
        self.model_dir = Path(model_dir)
        self.card = read_card(self.model_dir)
        if verify:
            verify_files(self.model_dir, self.card)
        files = self.card.files
        if quantized and files.decoder_int8 is None:
            raise ModelCardError(f"{self.model_dir} ships no int8 decoder")
        providers = providers or ["CPUExecutionProvider"]
        options = session_options(threads)
        encoder = ort.InferenceSession(str(self.model_dir / files.encoder), options, providers=providers)
        decoder_file = files.decoder_int8 if quantized and files.decoder_int8 else files.decoder
        decoder = ort.InferenceSession(str(self.model_dir / decoder_file), options, providers=providers)
        vocab = self.card.vocabulary
        super().__init__(encoder, decoder, vocab.bos_id, vocab.eos_id, vocab.pad_id, io_binding)
        self.tokenizer = spm.SentencePieceProcessor(model_file=str(self.model_dir / files.tokenizer))
        self.quantized = quantized

    @property
    def id(self) -> str:
        return self.card.id
