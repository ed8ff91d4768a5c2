"""A token corpus held on the device for language-model training.

The text (a local file, a SlimPajama-layout directory read with
:class:`~grokjax.data.text.ShardReader`, or by default the standard library's pydoc
text) is tokenized once, each document followed by the end-of-document id, and split
contiguously: the first ``train_fraction`` of the tokens train, the rest validate.
Training windows start anywhere in the training part; validation uses
``val_windows`` fixed, non-overlapping windows spread over the validation part. A
window of ``seq_len + 1`` tokens gives inputs ``w[:-1]`` and next-token targets ``w[1:]``.
"""

from __future__ import annotations

import pathlib
import sys
from dataclasses import dataclass

import numpy as np

from grokjax.data.split import SplitSizes
from grokjax.data.synthetic import offline_text
from grokjax.data.text import ByteTokenizer, ShardReader, gpt2_tokenizer
from grokjax.errors import DataError

__all__ = ["TokenCorpus", "token_corpus"]


@dataclass(frozen=True)
class TokenCorpus(SplitSizes):
    """``tokens_T`` (int32) and the start positions of training / validation windows."""

    tokens_T: np.ndarray
    train_idx: np.ndarray  # window starts in the training part
    val_idx: np.ndarray  # fixed validation window starts
    seq_len: int
    vocab_size: int


def _documents(text_path: str, on_error: str = "raise") -> list[str]:
    if not text_path:
        return [offline_text().decode("utf-8")]
    path = pathlib.Path(text_path)
    if path.is_dir():
        reader = ShardReader(path, "train", on_error=on_error)
        documents = list(reader)
        if reader.skipped:
            print(
                f"grokjax: {path}: skipped {reader.skipped} malformed line(s) or damaged "
                "shard(s) (on_error = 'skip')",
                file=sys.stderr,
            )
        return documents
    return [offline_text(path).decode("utf-8", errors="replace")]


def token_corpus(
    text_path: str = "",
    *,
    seq_len: int = 128,
    train_fraction: float = 0.9,
    val_windows: int = 64,
    max_tokens: int = 0,
    tokenizer: str = "bytes",
    vocab_dir: str = "",
    on_error: str = "raise",
) -> TokenCorpus:
    """Tokenize ``text_path`` (see the module docstring) into a :class:`TokenCorpus`.

    ``max_tokens`` (> 0) keeps only the first tokens; ``tokenizer`` is ``"bytes"``
    (vocabulary 257) or ``"gpt2"`` (tiktoken, vocabulary files in ``vocab_dir``);
    ``on_error`` is :class:`~grokjax.data.text.ShardReader`'s for a shard directory.

    >>> corpus = token_corpus(seq_len=16, max_tokens=5000, val_windows=4)
    >>> corpus.tokens_T.shape, corpus.vocab_size, corpus.num_val
    ((5000,), 257, 4)
    """
    if tokenizer not in ("bytes", "gpt2"):
        raise ValueError(f"tokenizer={tokenizer!r}: choose 'bytes' or 'gpt2'.")
    tok = ByteTokenizer() if tokenizer == "bytes" else gpt2_tokenizer(vocab_dir)
    ids: list[int] = []
    for doc in _documents(text_path, on_error):
        ids.extend(tok.encode(doc))
        ids.append(tok.eos_id)
        if max_tokens and len(ids) >= max_tokens:
            break
    tokens = np.asarray(ids[:max_tokens] if max_tokens else ids, np.int32)
    n_train = int(len(tokens) * train_fraction)
    window = seq_len + 1
    val_span = len(tokens) - n_train
    if n_train < window + 1 or val_span < window * val_windows:
        raise DataError(
            f"{len(tokens)} tokens split at train_fraction={train_fraction} leave {n_train} "
            f"training and {val_span} validation tokens: too few for windows of {window} "
            f"tokens and {val_windows} validation windows; use more text (max_tokens=0), a "
            "shorter seq_len or fewer val_windows."
        )
    train_idx = np.arange(0, n_train - window + 1, dtype=np.int32)
    stride = val_span // val_windows
    val_idx = (n_train + stride * np.arange(val_windows)).astype(np.int32)
    tokens.setflags(write=False)
    return TokenCorpus(tokens, train_idx, val_idx, seq_len, tok.vocab_size)
