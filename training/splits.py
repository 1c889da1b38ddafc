"""Seeded held-out splits carved out of a training corpus, without leaking a sentence across the split.

Pairs that share a source sentence or a target sentence (compared case-insensitively) form one group,
transitively; a group goes to one side of the split as a whole. So no held-out sentence, on either side,
is ever seen in training, in either translation direction.
"""

from __future__ import annotations

import random


def sentence_groups(pairs: list[tuple[str, str]]) -> list[list[int]]:
    """Indices of ``pairs`` grouped by shared source or target sentence (union-find), in first-seen order."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[tuple[int, str], int] = {}
    for index, (src, tgt) in enumerate(pairs):
        for key in ((0, src.casefold()), (1, tgt.casefold())):
            other = first_with.setdefault(key, index)
            root_a, root_b = find(index), find(other)
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    groups: dict[int, list[int]] = {}
    for index in range(len(pairs)):
        groups.setdefault(find(index), []).append(index)
    return list(groups.values())


def carve(pairs: list[tuple[str, str]], sizes: dict[str, int], seed: int) -> dict[str, list[tuple[str, str]]]:
    """Split ``pairs`` into held-out parts of about ``sizes[name]`` pairs each, plus ``"train"`` (the rest).

    Groups are visited in a seeded random order and each goes to the first part still short of its size,
    so parts may exceed their size by less than one group. Groups larger than ``max_group`` pairs
    (very frequent sentences such as "Go away.") always stay in training. Deterministic for a given
    corpus, cleaning and seed: this is the split recipe that the model card records.
    """
    groups = sentence_groups(pairs)
    max_group = 8
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    parts: dict[str, list[int]] = {name: [] for name in sizes}
    train: list[int] = []
    for group_index in order:
        group = groups[group_index]
        target = next((name for name, size in sizes.items() if len(parts[name]) < size), None)
        if target is None or len(group) > max_group:
            train.extend(group)
        else:
            parts[target].extend(group)
    result = {name: [pairs[i] for i in sorted(indices)] for name, indices in parts.items()}
    result["train"] = [pairs[i] for i in sorted(train)]
    return result
