"""Adapter that lets the shared search code (service.decoding) drive a PyTorch Seq2Seq."""

from __future__ import annotations

import numpy as np
import torch

from service.decoding import Encoded
from training.model import Seq2Seq


class TorchStepModel:
    def __init__(self, model: Seq2Seq) -> None:
        self.model = model.eval()
        self.bos_id = model.config.bos_id
        self.eos_id = model.config.eos_id

    @torch.inference_mode()
    def encode(self, src: np.ndarray, lengths: np.ndarray) -> Encoded:
        memory, keys, mask, state = self.model.encode(torch.from_numpy(src), torch.from_numpy(lengths))
        return Encoded(memory.numpy(), keys.numpy(), mask.numpy(), state.numpy())

    @torch.inference_mode()
    def step(self, prev_tokens: np.ndarray, state: np.ndarray, encoded: Encoded):
        log_probs, new_state, weights = self.model.decode_step(
            torch.from_numpy(prev_tokens), torch.from_numpy(state), torch.from_numpy(encoded.memory),
            torch.from_numpy(encoded.keys), torch.from_numpy(encoded.mask))
        return log_probs.numpy(), new_state.numpy(), weights.numpy()
