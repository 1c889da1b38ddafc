"""What the search needs from a model: the encoder output of a batch and a decoder step (``StepModel``).

``inference.onnx_model.OnnxGraphs`` implements it with onnxruntime, ``training.torch_step_model`` with PyTorch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

# The exported graphs' input and output names.
ENCODER_INPUTS = ["src_tokens", "src_lengths"]
ENCODER_OUTPUTS = ["memory", "memory_keys", "memory_mask", "init_state"]
DECODER_INPUTS = ["prev_tokens", "state", "memory", "memory_keys", "memory_mask"]
DECODER_OUTPUTS = ["log_probs", "new_state", "attention"]
TOP_K_INPUT = "top_k"  # optional (training/top_k_graph.py): each row's k best log-probs and tokens, sorted
TOP_K_OUTPUTS = ["top_log_probs", "top_tokens"]


@dataclass
class Encoded:
    """Encoder output for a batch of B sentences.

    memory [B, S, M] float32, keys [B, S, K] float32, mask [B, S] bool, state [B, D] float32 (initial decoder state).
    """

    memory: np.ndarray
    keys: np.ndarray
    mask: np.ndarray
    state: np.ndarray

    def select(self, rows: np.ndarray) -> Encoded:
        """Rows of the batch (in any order, repeats allowed): rows [N] -> Encoded with batch N."""
        return Encoded(self.memory[rows], self.keys[rows], self.mask[rows], self.state[rows])


class StepModel(Protocol):
    bos_id: int
    eos_id: int

    def encode(self, src: np.ndarray, lengths: np.ndarray) -> Encoded:
        """src [B, S] int64 (padded), lengths [B] int64 -> Encoded."""

    def step(
        self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """prev_tokens [B] int64, state [B, D] -> log-probs [B, V], new state [B, D], attention [B, S] or None."""
