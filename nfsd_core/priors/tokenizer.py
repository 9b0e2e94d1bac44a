"""A CLIP tokenizer the project owns: byte-level BPE learnt on a prior's own word list.

The vocabulary follows CLIP's layout (256 byte symbols, the same with the end-of-word mark
`</w>`, learnt merges, then `<|startoftext|>` and `<|endoftext|>`), so every caption word is one
token and any other text still tokenizes, byte by byte. With no words it is a plain byte-level
tokenizer (514 tokens), what the test models use. Nothing is downloaded.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from transformers import CLIPTokenizer

END_OF_WORD = "</w>"
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-ins for the 256 byte values, in CLIP's vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair merges, most frequent pair first, until every word is a single symbol."""
    segmented = Counter(tuple(word[:-1]) + (word[-1] + END_OF_WORD,) for word in words)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for symbols, count in segmented.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            return merges
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        segmented = Counter({_merge(symbols, best): count for symbols, count in segmented.items()})


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    merged, i = [], 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            merged.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            merged.append(symbols[i])
            i += 1
    return tuple(merged)


def build_tokenizer(words: list[str], max_length: int = MAX_LENGTH) -> CLIPTokenizer:
    """A tokenizer that gives each of `words` one token, padding to `max_length` tokens."""
    symbols = byte_symbols()
    merges = learn_merges(words)
    vocab = {token: i for i, token in enumerate([*symbols, *(s + END_OF_WORD for s in symbols)])}
    for left, right in merges:
        vocab.setdefault(left + right, len(vocab))
    vocab[BOS], vocab[EOS] = len(vocab), len(vocab) + 1
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def save_tokenizer(tokenizer: CLIPTokenizer, directory: str | Path) -> None:
    """`save_pretrained` plus the classic vocab.json / merges.txt pair other CLIP loaders read."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    model = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    (directory / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False))
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
