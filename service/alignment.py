"""Word alignments from attention: pieces grouped into words, attention summed and averaged to words, and each
target word linked to the source word it attends to most, written in Pharaoh format ("0-0 1-2 2-1").

Words are defined on the SentencePiece pieces the API returns: a piece starting with ``▁`` begins a word, the
pieces after it up to the next such piece continue it, and a word's text is its pieces joined without the
``▁`` (an unknown piece shows as ``⁇``, as SentencePiece decodes it). A lone ``▁`` piece only marks a word
boundary: it belongs to the word the next pieces spell. ``</s>`` belongs to no word.

Aggregation, for attention ``A`` [target pieces, source pieces] (each row sums to 1):

- source side: a word's attention is the *sum* over its pieces (attention is a distribution over source
  positions, so the mass on a word is the mass on its pieces; ``</s>``'s mass is dropped);
- target side: a word's attention is the *mean* of its pieces' rows (each row is one decoder step's
  distribution; the mean is again one, whatever the number of pieces).

Each target word is linked to the source word of highest aggregated attention (ties: the first). Only this
direction is used: rows are the model's own distributions, whereas comparing one source word's weight across
rows compares different softmaxes; and an intersection with source-to-target links would drop most links of
a soft attention. So every target word has exactly one link, and a source word may have none or several.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

WORD_START = "\u2581"  # ▁
UNKNOWN_PIECE, UNKNOWN_TEXT = "<unk>", "\u2047"  # SentencePiece decodes <unk> as ⁇
NOT_A_WORD = frozenset({"</s>", "<s>", "<pad>"})


@dataclass(frozen=True)
class WordAlignment:
    source_words: list[str]
    target_words: list[str]
    links: list[tuple[int, int]]  # (source word index, target word index), sorted
    scores: np.ndarray | None = field(default=None, compare=False, repr=False)  # [target words, source words]

    @property
    def pharaoh(self) -> str:
        return " ".join(f"{i}-{j}" for i, j in self.links)


def group_words(pieces: list[str]) -> tuple[list[str], list[int]]:
    """Pieces -> (words, the word index of each piece; -1 for a piece in no word, such as ``</s>``)."""
    words: list[str] = []
    owner: list[int] = []
    for piece in pieces:
        if piece in NOT_A_WORD:
            owner.append(-1)
            continue
        starts = piece.startswith(WORD_START)
        text = UNKNOWN_TEXT if piece == UNKNOWN_PIECE else piece.removeprefix(WORD_START).replace(WORD_START, " ")
        if not words or (starts and words[-1]):  # a lone ▁ before this piece already opened its word
            words.append("")
        words[-1] += text
        owner.append(len(words) - 1)
    if words and not words[-1]:  # a trailing lone ▁ spells no word: it joins the previous one, if any
        words.pop()
        last = len(words) - 1
        owner = [last if o == len(words) else o for o in owner]
    return words, owner


def word_attention(weights: np.ndarray, source_owner: list[int], target_owner: list[int],
                   source_words: int, target_words: int) -> np.ndarray:
    """weights [T, S] over pieces -> [target_words, source_words]: summed over a source word's pieces, averaged
    over a target word's pieces; pieces whose owner is -1 are left out."""
    to_source = np.zeros((len(source_owner), source_words))  # [S, Sw] one-hot
    for piece, word in enumerate(source_owner):
        if word >= 0:
            to_source[piece, word] = 1.0
    from_target = np.zeros((target_words, len(target_owner)))  # [Tw, T] averaging
    for piece, word in enumerate(target_owner):
        if word >= 0:
            from_target[word, piece] = 1.0
    from_target /= np.maximum(from_target.sum(axis=1, keepdims=True), 1.0)
    return from_target @ weights.astype(np.float64) @ to_source  # [Tw, T] @ [T, S] @ [S, Sw]


def align(source_pieces: list[str], target_pieces: list[str], weights: np.ndarray) -> WordAlignment:
    """Word alignment of one sentence from its attention ``weights`` [len(target_pieces), len(source_pieces)]."""
    if weights.shape != (len(target_pieces), len(source_pieces)):
        raise ValueError(f"attention of shape {weights.shape} for {len(target_pieces)} target and "
                         f"{len(source_pieces)} source pieces")
    source_words, source_owner = group_words(source_pieces)
    target_words, target_owner = group_words(target_pieces)
    links: list[tuple[int, int]] = []
    scores = None
    if source_words and target_words:
        scores = word_attention(weights, source_owner, target_owner, len(source_words), len(target_words))
        links = sorted((int(i), j) for j, i in enumerate(scores.argmax(axis=1)))  # [Tw]: best source word
    return WordAlignment(source_words, target_words, links, scores)
