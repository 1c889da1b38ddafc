"""Device and precision choices for training. CPU fp32 is what CI trains with; the mixed-precision step
mechanics (autocast, gradient scaling, unscale before clipping) are exercised here on the CPU too."""

from __future__ import annotations

import pytest
import torch

from training.distributed import resolve_device_type
from training.model import ModelConfig, Seq2Seq
from training.precision import Precision, choose_precision


def test_device_choice():
    assert resolve_device_type("cpu") == "cpu"
    assert resolve_device_type("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="'tpu' is not auto, cpu or cuda"):
        resolve_device_type("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="sees no CUDA device"):
            resolve_device_type("cuda")


def test_precision_choice_on_cpu():
    assert choose_precision("auto", torch.device("cpu")).name == "fp32"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        choose_precision("fp16", torch.device("cpu"))
    with pytest.raises(ValueError, match="is not one of"):
        choose_precision("int4", torch.device("cpu"))


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_mixed_precision_steps_learn(name):
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(vocab_size=50, cell="gru", attention="luong_general", embedding_dim=16,
                                encoder_hidden=16, decoder_hidden=24, dropout=0.0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10) if name == "fp16" else None
    precision = Precision(name, "cpu", scaler)
    src = torch.randint(4, 50, (8, 7))
    lengths = torch.full((8,), 7)
    tgt_in, tgt_out = torch.randint(4, 50, (8, 6)), torch.randint(4, 50, (8, 6))
    losses = []
    for _ in range(30):
        with precision.autocast():
            logits = model(src, lengths, tgt_in)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), tgt_out.reshape(-1))
        optimizer.zero_grad()
        norm = precision.backward_and_step(loss, optimizer, model.parameters(), clip_norm=1.0)
        losses.append(loss.item())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert norm > 0 and losses[-1] < 0.7 * losses[0]
