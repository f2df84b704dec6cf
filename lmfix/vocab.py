"""Word vocabularies and the two special tokens every lmfix token stream uses.

A leaf module: the word tokenizer (lmfix.tokenizer), the SentencePiece mechanics
(lmfix.subword) and corpus reading (lmfix.data) all build on it, so none of them imports
another to learn what ``<eos>`` is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EOS = "<eos>"
UNK = "<unk>"


@dataclass
class Vocab:
    """Words in order of first appearance in the training split; a word's id is its index."""

    words: list[str]
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)


def build_vocab(lines: list[str]) -> Vocab:
    """The PyTorch example's vocabulary: whitespace words, then ``<eos>`` after the first line."""
    seen: dict[str, int] = {}
    for line in lines:
        for w in line.split():
            if w not in seen:
                seen[w] = len(seen)
        if EOS not in seen:
            seen[EOS] = len(seen)
    # A general corpus may lack <unk>; valid/test words absent from train need it.
    if UNK not in seen:
        seen[UNK] = len(seen)
    return Vocab(list(seen), seen)
