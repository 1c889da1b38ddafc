"""Mixed precision on CUDA: bf16 autocast where the GPU supports it, else fp16 with a gradient scaler.

On CPU training stays fp32 (the default, and what CI tests); the exported graphs are always fp32.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class Precision:
    """How a training step runs: ``autocast()`` around the forward pass, ``scaler`` for fp16 backward."""

    name: str  # "fp32" | "bf16" | "fp16"
    device_type: str
    scaler: torch.amp.GradScaler | None

    def autocast(self):
        if self.name == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
        return torch.autocast(device_type=self.device_type, dtype=dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer, parameters,
                          clip_norm: float) -> float:
        """Backward, unscale (fp16), clip to ``clip_norm``, step; -> the gradient norm before clipping.

        With fp16 a step whose gradients overflowed is skipped by the scaler (and its norm is inf).
        """
        parameters = list(parameters)
        if self.scaler is None:
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
            optimizer.step()
            return float(norm)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(parameters, clip_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
        return float(norm)


def choose_precision(requested: str, device: torch.device) -> Precision:
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision: {requested!r} is not one of {PRECISIONS}")
    if device.type != "cuda":
        if requested in ("bf16", "fp16"):
            raise ValueError(f"train.precision {requested} needs a CUDA device; this run trains on {device}")
        return Precision("fp32", device.type, None)
    name = requested
    if requested == "auto":
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.precision bf16: this GPU does not support bfloat16; use fp16 or auto")
    return Precision(name, "cuda", torch.amp.GradScaler("cuda") if name == "fp16" else None)
