"""Adapter that lets the shared search code (inference.search) drive a PyTorch Seq2Seq."""

from __future__ import annotations

import numpy as np
import torch

from inference.step_model import Encoded
from training.model import Seq2Seq


class TorchStepModel:
    def __init__(self, model: Seq2Seq) -> None:
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.bos_id = model.config.bos_id
        self.eos_id = model.config.eos_id

    @torch.inference_mode()
    def encode(self, src: np.ndarray, lengths: np.ndarray) -> Encoded:
        memory, keys, mask, state = self.model.encode(self._tensor(src), torch.from_numpy(lengths))
        return Encoded(*(t.cpu().numpy() for t in (memory, keys, mask, state)))

    @torch.inference_mode()
    def step(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded):
        outputs = self.model.decode_step(*(self._tensor(a) for a in (
            prev_tokens, state, encoded.memory, encoded.keys, encoded.mask)))
        return tuple(t.cpu().numpy() for t in outputs)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)
