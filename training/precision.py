"""Mixed precision: on CUDA, bf16 autocast where the GPU supports it, else fp16 with a gradient scaler; on a CPU
with native bfloat16 (AVX-512 BF16 or AMX), bf16 autocast when asked for.

On CPU ``auto`` stays fp32 (what CI tests); ``bf16`` is an explicit choice there (docs/training.md measures its
speed and quality against fp32). The weights are fp32 throughout and the exported graphs are always fp32.
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


def cpu_supports_bf16() -> bool:
    """Whether oneDNN runs bfloat16 matrix products natively here (emulated bf16 is slower than fp32)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def choose_precision(requested: str, device: torch.device) -> Precision:
    if requested not in PRECISIONS:
        raise ValueError(f"train.precision: {requested!r} is not one of {PRECISIONS}")
    if device.type != "cuda":
        if requested == "fp16":
            raise ValueError(f"train.precision fp16 needs a CUDA device; this run trains on {device}")
        if requested == "bf16":
            if not cpu_supports_bf16():
                raise ValueError("train.precision bf16: this CPU has no native bfloat16 (AVX-512 BF16 or AMX); "
                                 "use fp32 or auto")
            return Precision("bf16", device.type, None)
        return Precision("fp32", device.type, None)
    name = requested
    if requested == "auto":
        name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if name == "bf16" and not torch.cuda.is_bf16_supported():
        raise ValueError("train.precision bf16: this GPU does not support bfloat16; use fp16 or auto")
    return Precision(name, "cuda", torch.amp.GradScaler("cuda") if name == "fp16" else None)
