"""Synthetic and small offline data sets for the Surge-Collapse experiments (seed 001).

- :func:`gaussian_classification`: the source's "dummy" data, ``x ~ N(0, I_F)`` with
  labels drawn uniformly from ``K`` classes, independent of ``x`` (a pure
  memorisation task: validation accuracy is chance, ``1/K``).
- :func:`byte_windows`: next-byte prediction from a window of the ``context`` previous
  bytes of a text (the truly auto-regressive mode), by default the Python standard
  library's offline ``pydoc_data`` topics (≈465 kB of English), so nothing downloads.
"""

from __future__ import annotations

import operator
import pathlib
from dataclasses import dataclass

import numpy as np

from grokjax.data.split import SplitSizes, random_split
from grokjax.errors import DataError

__all__ = [
    "ByteWindows",
    "GaussianClassification",
    "byte_windows",
    "gaussian_classification",
    "offline_text",
]


def _readonly(array: np.ndarray, dtype) -> np.ndarray:
    array = np.array(array, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class GaussianClassification(SplitSizes):
    """Gaussian inputs with random labels and a train/validation split.

    Attributes: ``x_NF`` (float32), ``labels_N`` (int32), ``train_idx``, ``val_idx``.
    """

    x_NF: np.ndarray
    labels_N: np.ndarray
    num_classes: int
    train_idx: np.ndarray
    val_idx: np.ndarray

    def inputs(self, encoding: str = "dense") -> np.ndarray:
        if encoding != "dense":
            raise ValueError(f"gaussian data has one encoding, 'dense'; got {encoding!r}.")
        return self.x_NF

    def vocab_size(self, encoding: str = "dense") -> int:
        """Input width ``F``."""
        return int(self.inputs(encoding).shape[1])


def gaussian_classification(
    num_samples: int = 10_000,
    features: int = 128,
    num_classes: int = 128,
    train_fraction: float = 0.8,
    seed: int = 0,
    *,
    sample_seed: int = 0,
) -> GaussianClassification:
    """``num_samples`` rows ``x ~ N(0, I_features)``, labels uniform over ``num_classes``.

    Samples come from ``np.random.default_rng(sample_seed)`` (x first, then labels); the
    split from ``default_rng(seed).permutation`` with ``floor(train_fraction·N)`` rows
    training.

    >>> ds = gaussian_classification(100, features=4, num_classes=3, seed=1)
    >>> ds.x_NF.shape, ds.num_train, int(ds.labels_N.max()) < 3
    ((100, 4), 80, True)
    """
    num_samples, features = operator.index(num_samples), operator.index(features)
    num_classes = operator.index(num_classes)
    if num_samples < 2 or features < 1 or num_classes < 2:
        raise ValueError(
            f"gaussian_classification needs num_samples >= 2, features >= 1 and "
            f"num_classes >= 2; got {num_samples}, {features}, {num_classes}."
        )
    rng = np.random.default_rng(sample_seed)
    x = rng.standard_normal((num_samples, features), dtype=np.float32)
    labels = rng.integers(0, num_classes, num_samples)
    train_idx, val_idx = random_split(num_samples, train_fraction, seed)
    return GaussianClassification(
        _readonly(x, np.float32),
        _readonly(labels, np.int32),
        num_classes,
        _readonly(train_idx, np.int32),
        _readonly(val_idx, np.int32),
    )


def offline_text(path: str | pathlib.Path | None = None) -> bytes:
    """The bytes of a local text file, or (``None``) the standard library's pydoc topics.

    The default needs no download: ``pydoc_data.topics`` ships with CPython (the help
    texts of the language reference, ≈465 kB, concatenated in key order).
    """
    if path:
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"text file {path} not found: set data.text_path to an existing local file, "
                "or leave it empty for the built-in pydoc_data text."
            )
        return path.read_bytes()
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # some distributions strip pydoc_data
        raise ImportError(
            "the default offline text comes from the standard library's pydoc_data, which "
            "this Python lacks: set data.text_path to a local text file."
        ) from err
    return "".join(topics[k] for k in sorted(topics)).encode("utf-8")


@dataclass(frozen=True)
class ByteWindows(SplitSizes):
    """Next-byte prediction: ``tokens_NC`` (the ``C`` previous bytes) → ``labels_N``."""

    tokens_NC: np.ndarray
    labels_N: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    num_classes: int = 256

    def inputs(self, encoding: str = "onehot") -> np.ndarray:
        """The byte ids ``(N, C)`` int32; the trainer one-hot encodes them per batch."""
        if encoding != "onehot":
            raise ValueError(f"byte windows have one encoding, 'onehot'; got {encoding!r}.")
        return self.tokens_NC

    def vocab_size(self, encoding: str = "onehot") -> int:
        """Width of the one-hot input, ``C · 256``."""
        return int(self.inputs(encoding).shape[1]) * 256


def byte_windows(
    text: bytes,
    context: int = 8,
    num_samples: int = 10_000,
    train_fraction: float = 0.8,
    seed: int = 0,
    *,
    sample_seed: int = 0,
) -> ByteWindows:
    """``num_samples`` (window, next byte) pairs from ``text``.

    Window starts are ``num_samples`` distinct positions drawn with
    ``default_rng(sample_seed)`` (sorted); sample ``i`` is
    ``text[s_i : s_i + context] → text[s_i + context]``. The split is as
    :func:`gaussian_classification`'s.

    >>> ds = byte_windows(b"abcdefgh", context=3, num_samples=5, train_fraction=0.6)
    >>> bytes(ds.tokens_NC[0].astype(np.uint8)), chr(ds.labels_N[0])
    (b'abc', 'd')
    """
    context, num_samples = operator.index(context), operator.index(num_samples)
    if context < 1:
        raise ValueError(f"context={context}: a window needs at least 1 byte.")
    data = np.frombuffer(bytes(text), np.uint8)
    starts_available = data.size - context
    if not 2 <= num_samples <= starts_available:
        raise DataError(
            f"num_samples={num_samples}: the text has {data.size} bytes, so at most "
            f"{max(starts_available, 0)} windows of {context}+1 bytes; lower num_samples or "
            "use a longer text."
        )
    rng = np.random.default_rng(sample_seed)
    starts = np.sort(rng.choice(starts_available, num_samples, replace=False))
    tokens = data[starts[:, None] + np.arange(context)]
    labels = data[starts + context]
    train_idx, val_idx = random_split(num_samples, train_fraction, seed)
    return ByteWindows(
        _readonly(tokens, np.int32),
        _readonly(labels, np.int32),
        _readonly(train_idx, np.int32),
        _readonly(val_idx, np.int32),
    )
