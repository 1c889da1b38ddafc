"""The PyTorch model: every cell/attention variant, teacher forcing vs step-by-step, padding, export parity."""

import itertools

import pytest
import torch

from inference.search import SearchOptions, search
from training.model import ModelConfig, Seq2Seq
from training.torch_step_model import TorchStepModel

CELLS = ["rnn", "gru", "lstm"]
ATTENTIONS = ["none", "bahdanau", "luong_dot", "luong_general"]


def tiny(cell: str, attention: str, input_feeding: bool = False, layers: int = 2) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=40, cell=cell, attention=attention, embedding_dim=16, encoder_hidden=8,
                         decoder_hidden=16, attention_dim=8, input_feeding=input_feeding, encoder_layers=layers,
                         decoder_layers=layers, dropout=0.0)
    return Seq2Seq(config).eval()


def padded_batch():
    src = torch.randint(4, 40, (3, 7), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([7, 4, 2])
    for row, n in enumerate(lengths):
        src[row, n:] = 0
    tgt = torch.randint(4, 40, (3, 5), generator=torch.Generator().manual_seed(2))
    return src, lengths, tgt


VARIANTS = [(c, a, False) for c, a in itertools.product(CELLS, ATTENTIONS)] + [
    (c, a, True) for c, a in itertools.product(CELLS, ["luong_dot", "luong_general"])]


@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS)
def test_teacher_forcing_equals_step_by_step_decoding(cell, attention, input_feeding):
    model = tiny(cell, attention, input_feeding)
    src, lengths, tgt = padded_batch()
    with torch.no_grad():
        forced = torch.log_softmax(model(src, lengths, tgt), dim=-1)
        memory, keys, mask, state = model.encode(src, lengths)
        stepped = []
        for t in range(tgt.size(1)):
            log_probs, state, weights = model.decode_step(tgt[:, t], state, memory, keys, mask)
            stepped.append(log_probs)
            assert torch.allclose(weights.sum(-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(forced, torch.stack(stepped, dim=1), atol=1e-5)


@pytest.mark.parametrize("cell,attention,input_feeding", VARIANTS)
def test_padding_does_not_change_a_sentence(cell, attention, input_feeding):
    model = tiny(cell, attention, input_feeding)
    src, lengths, tgt = padded_batch()
    with torch.no_grad():
        batched = model(src, lengths, tgt)[2]
        alone = model(src[2:3, :2], lengths[2:3], tgt[2:3])[0]
    assert torch.allclose(batched, alone, atol=1e-5)


def test_attention_ignores_padding_positions():
    model = tiny("gru", "bahdanau")
    src, lengths, _ = padded_batch()
    with torch.no_grad():
        memory, keys, mask, state = model.encode(src, lengths)
        _, _, weights = model.decode_step(torch.full((3,), 2), state, memory, keys, mask)
    assert weights[1, 4:].abs().max() == 0 and weights[2, 2:].abs().max() == 0


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="luong_dot"):
        ModelConfig(vocab_size=10, attention="luong_dot", encoder_hidden=8, decoder_hidden=32)
    with pytest.raises(ValueError, match="input feeding"):
        ModelConfig(vocab_size=10, attention="bahdanau", input_feeding=True)
    with pytest.raises(ValueError, match="cell"):
        ModelConfig(vocab_size=10, cell="transformer")


def test_gradient_flows_to_every_parameter():
    model = tiny("lstm", "bahdanau").train()
    src, lengths, tgt = padded_batch()
    model(src, lengths, tgt).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_beam_one_equals_greedy_and_nbest_is_sorted():
    model = TorchStepModel(tiny("gru", "luong_general", layers=1))
    sources = [[5, 6, 7, 3], [8, 9, 3], [10, 11, 12, 13, 14, 3]]
    greedy = search(model, sources, SearchOptions(beam_size=1))
    beam_one = search(model, sources, SearchOptions(beam_size=1, length_penalty=0.6))
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam_one]
    nbest = search(model, sources, SearchOptions(beam_size=4, n_best=4))
    for hyps in nbest:
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True) and len(hyps) == 4


def test_search_respects_max_length():
    model = TorchStepModel(tiny("gru", "none", layers=1))
    options = SearchOptions(beam_size=2, max_length_ratio=0.0, max_length_offset=3)
    for hyps in search(model, [[5, 6, 7, 3]], options):
        assert all(len(h.tokens) <= 3 for h in hyps)
        assert all(h.attention is None for h in hyps)
