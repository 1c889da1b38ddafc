"""Token-bucketed batches: sentences of similar length together, each batch under a token budget."""

from __future__ import annotations

import random

import torch

from inference.search import pad_batch


def token_batches(
    examples: list[tuple[list[int], list[int]]], max_tokens: int, rng: random.Random, shuffle: bool = True
) -> list[list[int]]:
    """Group example indices so that batch_size * (longest source + longest target) <= max_tokens.

    Sorting by (noisy) length keeps padding low; shuffling the batch order keeps epochs varied.
    """
    def length(i: int) -> float:
        src, tgt = examples[i]
        return len(src) + len(tgt) + (rng.random() if shuffle else 0.0)

    order = sorted(range(len(examples)), key=length)
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        size = len(examples[index][0]) + len(examples[index][1])
        if current and max(longest, size) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, size)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(
    examples: list[tuple[list[int], list[int]]], indices: list[int], bos_id: int, eos_id: int, pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> src [B, S], src_lengths [B], tgt_in [B, T] (<s> + y), tgt_out [B, T] (y + </s>), padded with pad_id."""
    src, lengths = pad_batch([examples[i][0] for i in indices], pad_id)
    tgt_in, _ = pad_batch([[bos_id] + examples[i][1] for i in indices], pad_id)
    tgt_out, _ = pad_batch([examples[i][1] + [eos_id] for i in indices], pad_id)
    return (torch.from_numpy(src), torch.from_numpy(lengths), torch.from_numpy(tgt_in), torch.from_numpy(tgt_out))
