"""Joint SentencePiece subword vocabulary shared by source and target languages."""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def train_sentencepiece(
    sentences: list[str], model_path: Path, vocab_size: int = 8000, model_type: str = "unigram"
) -> spm.SentencePieceProcessor:
    """Train a joint subword model on ``sentences`` and write it to ``model_path``.

    Ids 0-3 are reserved for <pad>, <unk>, <s>, </s>; the service reads them back from model.json.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=1.0,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        shuffle_input_sentence=False,  # the whole corpus is used, in order: deterministic
        num_threads=2,
        minloglevel=2,
    )
    model_path.parent.mkdir(parents=True, exist_ok=True)
    model_path.write_bytes(model.getvalue())
    return spm.SentencePieceProcessor(model_file=str(model_path))
