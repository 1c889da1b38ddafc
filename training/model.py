"""Attention encoder-decoder RNN (Bahdanau et al. 2015; Luong et al. 2015; Cho et al. 2014 without attention).

Data flows: source ids -> ``Encoder`` (embedding + packed bi-RNN) -> memory, attention keys, mask and the
initial decoder state -> ``Decoder.step`` once per target token (or ``Decoder.forward`` over a whole
teacher-forced target sequence). The decoder's recurrent state travels as one flat tensor ``[B, D]`` so
that search code can reorder beams without knowing the cell type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

Cell = Literal["rnn", "gru", "lstm"]
AttentionType = Literal["none", "bahdanau", "luong_dot", "luong_general"]
RNN_CLASSES = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


@dataclass
class ModelConfig:
    vocab_size: int
    cell: Cell = "gru"
    attention: AttentionType = "bahdanau"
    embedding_dim: int = 256
    encoder_hidden: int = 256  # per direction
    encoder_layers: int = 1
    bidirectional: bool = True
    decoder_hidden: int = 512
    decoder_layers: int = 1
    attention_dim: int = 256  # Bahdanau's additive-attention width
    input_feeding: bool = False  # feed the previous attentional vector into the decoder RNN
    dropout: float = 0.3
    tie_target_embeddings: bool = True  # output projection shares the target embedding matrix
    share_embeddings: bool = True  # one embedding matrix for source and target (joint vocabulary)
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        if self.cell not in RNN_CLASSES:
            raise ValueError(f"cell must be one of {sorted(RNN_CLASSES)}, got {self.cell!r}")
        if self.attention not in ("none", "bahdanau", "luong_dot", "luong_general"):
            raise ValueError(f"unknown attention {self.attention!r}")
        if self.attention == "luong_dot" and self.decoder_hidden != self.memory_dim:
            raise ValueError("luong_dot needs decoder_hidden == encoder_hidden * directions")
        if self.input_feeding and not self.attention.startswith("luong"):
            raise ValueError("input feeding is a Luong-attention option")

    @property
    def memory_dim(self) -> int:
        return self.encoder_hidden * (2 if self.bidirectional else 1)

    @property
    def readout_dim(self) -> int:
        return self.embedding_dim

    @property
    def state_dim(self) -> int:
        """Width of the flat decoder state: hidden (and LSTM cell) of every layer, plus the input feed."""
        per_layer = self.decoder_hidden * (2 if self.cell == "lstm" else 1)
        return self.decoder_layers * per_layer + (self.readout_dim if self.input_feeding else 0)

    @property
    def parallel_teacher_forcing(self) -> bool:
        """True when training can run the decoder RNN over the whole target at once (no recurrence via context)."""
        return self.attention != "bahdanau" and not self.input_feeding

    def to_dict(self) -> dict:
        return asdict(self)


class Attention(nn.Module):
    """Scores a query against precomputed keys and returns (context, weights).

    Keys are computed once per source by ``project_keys`` and passed in explicitly, so the decoder step is a
    pure function of its inputs (exportable, batchable).
    """

    def __init__(self, kind: AttentionType, query_dim: int, memory_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "bahdanau":
            self.key_proj = nn.Linear(memory_dim, attention_dim, bias=False)
            self.query_proj = nn.Linear(query_dim, attention_dim, bias=False)
            self.energy = nn.Linear(attention_dim, 1, bias=False)
        elif kind == "luong_general":
            self.key_proj = nn.Linear(memory_dim, query_dim, bias=False)

    def project_keys(self, memory: torch.Tensor) -> torch.Tensor:
        """memory [B, S, M] -> keys [B, S, K]."""
        if self.kind in ("bahdanau", "luong_general"):
            return self.key_proj(memory)
        return memory

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """query [B, T, Q], keys [B, S, K], memory [B, S, M], mask [B, S] (True = real token)
        -> context [B, T, M], weights [B, T, S]."""
        if self.kind == "bahdanau":
            hidden = torch.tanh(keys.unsqueeze(1) + self.query_proj(query).unsqueeze(2))  # [B, T, S, A]
            scores = self.energy(hidden).squeeze(-1)  # [B, T, S]
        else:
            scores = torch.bmm(query, keys.transpose(1, 2))  # [B, T, S]
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights, memory), weights


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = RNN_CLASSES[config.cell](
            config.embedding_dim, config.encoder_hidden, num_layers=config.encoder_layers, batch_first=True,
            bidirectional=config.bidirectional, dropout=config.dropout if config.encoder_layers > 1 else 0.0,
        )

    def forward(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """src [B, S] ids, lengths [B] -> outputs [B, S', M] (S' = max length), top-layer final hidden [B, M]
        and, for LSTM, top-layer final cell [B, M]."""
        embedded = self.dropout(self.embedding(src))
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, final = self.rnn(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True)
        hidden, cell = final if isinstance(final, tuple) else (final, None)
        directions = 2 if self.config.bidirectional else 1
        return outputs, self._top_layer(hidden, directions), None if cell is None else self._top_layer(cell, directions)

    @staticmethod
    def _top_layer(state: torch.Tensor, directions: int) -> torch.Tensor:
        """[layers * directions, B, H] -> [B, directions * H] (forward and backward of the top layer)."""
        return torch.cat([state[-directions + d] for d in range(directions)], dim=-1)


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig, embedding: nn.Embedding) -> None:
        super().__init__()
        self.config = config
        self.embedding = embedding
        self.dropout = nn.Dropout(config.dropout)
        c = config
        context_in = c.memory_dim if c.attention in ("bahdanau", "none") else 0
        feed_in = c.readout_dim if c.input_feeding else 0
        self.rnn = RNN_CLASSES[c.cell](
            c.embedding_dim + context_in + feed_in, c.decoder_hidden, num_layers=c.decoder_layers, batch_first=True,
            dropout=c.dropout if c.decoder_layers > 1 else 0.0,
        )
        query_dim = c.decoder_hidden
        self.attention = Attention(c.attention, query_dim, c.memory_dim, c.attention_dim)
        self.readout = nn.Linear(c.decoder_hidden + c.memory_dim + c.embedding_dim, c.readout_dim)
        self.output = nn.Linear(c.readout_dim, c.vocab_size)
        if c.tie_target_embeddings:
            self.output.weight = embedding.weight
        n_state = c.decoder_layers * (2 if c.cell == "lstm" else 1)
        self.bridge = nn.Linear(c.memory_dim, n_state * c.decoder_hidden)

    # --- flat state <-> RNN state -------------------------------------------------------------------------
    def initial_state(self, summary: torch.Tensor, cell_summary: torch.Tensor | None) -> torch.Tensor:
        """Bridge the encoder's final states [B, M] into the flat decoder state [B, D]."""
        c = self.config
        if c.cell == "lstm":
            # hidden from the final hidden states, cell from the final cell states
            h_and_c = torch.tanh(self.bridge(summary))
            cells = torch.tanh(self.bridge(cell_summary))
            half = c.decoder_layers * c.decoder_hidden
            state = torch.cat([h_and_c[:, :half], cells[:, half:]], dim=-1)
        else:
            state = torch.tanh(self.bridge(summary))
        if c.input_feeding:
            state = torch.cat([state, summary.new_zeros(summary.size(0), c.readout_dim)], dim=-1)
        return state

    def _unpack(self, state: torch.Tensor):
        """flat [B, D] -> (RNN state [L, B, H] or tuple for LSTM, feed [B, R] or None)."""
        c = self.config
        batch, size = state.size(0), c.decoder_layers * c.decoder_hidden
        hidden = state[:, :size].reshape(batch, c.decoder_layers, c.decoder_hidden).transpose(0, 1).contiguous()
        offset = size
        if c.cell == "lstm":
            cell = state[:, size:2 * size].reshape(batch, c.decoder_layers, c.decoder_hidden).transpose(0, 1)
            hidden = (hidden, cell.contiguous())
            offset = 2 * size
        feed = state[:, offset:] if c.input_feeding else None
        return hidden, feed

    def _pack(self, hidden, feed: torch.Tensor | None) -> torch.Tensor:
        parts = list(hidden) if isinstance(hidden, tuple) else [hidden]
        batch = parts[0].size(1)
        flat = [p.transpose(0, 1).reshape(batch, -1) for p in parts]
        if feed is not None:
            flat.append(feed)
        return torch.cat(flat, dim=-1)

    # --- decoding ------------------------------------------------------------------------------------------
    def step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One target position.

        prev_tokens [B], state [B, D], memory [B, S, M], keys [B, S, K], mask [B, S]
        -> readout [B, R] (pre-projection), new state [B, D], attention weights [B, S].
        """
        hidden, feed = self._unpack(state)
        embedded = self.dropout(self.embedding(prev_tokens)).unsqueeze(1)  # [B, 1, E]
        if self.config.attention == "bahdanau":
            query = (hidden[0] if isinstance(hidden, tuple) else hidden)[-1].unsqueeze(1)  # [B, 1, H]
            context, weights = self.attention(query, keys, memory, mask)
            output, hidden = self.rnn(torch.cat([embedded, context], dim=-1), hidden)
        elif self.config.attention == "none":
            context, weights = memory[:, :1], mask[:, :1].to(memory.dtype).unsqueeze(1)
            output, hidden = self.rnn(torch.cat([embedded, context], dim=-1), hidden)
        else:
            rnn_input = embedded if feed is None else torch.cat([embedded, feed.unsqueeze(1)], dim=-1)
            output, hidden = self.rnn(rnn_input, hidden)
            context, weights = self.attention(output, keys, memory, mask)
        readout = torch.tanh(self.readout(torch.cat([output, context, embedded], dim=-1))).squeeze(1)
        return readout, self._pack(hidden, readout if self.config.input_feeding else None), weights.squeeze(1)

    def forward(
        self, tgt_in: torch.Tensor, state: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing. tgt_in [B, T] -> readouts [B, T, R], attention weights [B, T, S]."""
        if not self.config.parallel_teacher_forcing:
            readouts, all_weights = [], []
            for t in range(tgt_in.size(1)):
                readout, state, weights = self.step(tgt_in[:, t], state, memory, keys, mask)
                readouts.append(readout)
                all_weights.append(weights)
            return torch.stack(readouts, dim=1), torch.stack(all_weights, dim=1)
        hidden, _ = self._unpack(state)
        embedded = self.dropout(self.embedding(tgt_in))  # [B, T, E]
        steps = tgt_in.size(1)
        if self.config.attention == "none":
            context = memory[:, :1].expand(-1, steps, -1)
            output, _ = self.rnn(torch.cat([embedded, context], dim=-1), hidden)
            weights = mask[:, :1].to(memory.dtype).unsqueeze(1).expand(-1, steps, -1)
        else:
            output, _ = self.rnn(embedded, hidden)
            context, weights = self.attention(output, keys, memory, mask)
        readout = torch.tanh(self.readout(torch.cat([output, context, embedded], dim=-1)))
        return readout, weights

    def logits(self, readout: torch.Tensor) -> torch.Tensor:
        """readout [..., R] -> vocabulary logits [..., V]."""
        return self.output(self.dropout(readout))


class Seq2Seq(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        src_embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        tgt_embedding = src_embedding if config.share_embeddings else nn.Embedding(
            config.vocab_size, config.embedding_dim, padding_idx=config.pad_id)
        self.encoder = Encoder(config, src_embedding)
        self.decoder = Decoder(config, tgt_embedding)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for name, param in self.named_parameters():
            if "embedding" in name:
                nn.init.normal_(param, std=self.config.embedding_dim ** -0.5)
                with torch.no_grad():
                    param[self.config.pad_id].zero_()
            elif "rnn" in name and "weight_hh" in name:
                for chunk in param.data.chunk(param.size(0) // param.size(1)):
                    nn.init.orthogonal_(chunk)
            elif param.dim() > 1:
                nn.init.xavier_uniform_(param)
            else:
                nn.init.zeros_(param)

    def encode(self, src: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """src [B, S], lengths [B] -> memory [B, S', M], keys [B, S', K], mask [B, S'] bool, state [B, D].

        Without attention the memory is a single vector per sentence (S' = 1): the fixed-size context of a
        plain encoder-decoder.
        """
        outputs, summary, cell_summary = self.encoder(src, lengths)
        if self.config.attention == "none":
            memory = summary.unsqueeze(1)
            mask = torch.ones_like(memory[:, :, 0], dtype=torch.bool)
        else:
            memory = outputs
            positions = torch.arange(outputs.size(1), device=src.device).unsqueeze(0)
            mask = positions < lengths.to(src.device).unsqueeze(1)
        keys = self.decoder.attention.project_keys(memory)
        return memory, keys, mask, self.decoder.initial_state(summary, cell_summary)

    def forward(self, src: torch.Tensor, lengths: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits [B, T, V] for target inputs tgt_in [B, T] (starting with <s>)."""
        memory, keys, mask, state = self.encode(src, lengths)
        readout, _ = self.decoder(tgt_in, state, memory, keys, mask)
        return self.decoder.logits(readout)

    def decode_step(
        self, prev_tokens: torch.Tensor, state: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor,
        mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inference step: -> log-probs [B, V], new state [B, D], attention [B, S]."""
        readout, state, weights = self.decoder.step(prev_tokens, state, memory, keys, mask)
        return F.log_softmax(self.decoder.logits(readout), dim=-1), state, weights


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
