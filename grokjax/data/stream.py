"""Streamed language-model training: batches from shards, fed one interval at a time.

With ``data.stream = true`` (:class:`~grokjax.data.kinds.LMData`) the training batches
come from :class:`~grokjax.data.text.PackedStream` over a SlimPajama-layout shard
directory instead of windows of an in-memory corpus; only a small fixed set of windows
stays on the device (validation, and a sample of the training stream for probes).

- :class:`ShardStream` says how to open the training stream (root, tokenizer, packing,
  where it starts); :class:`TrainingStream` is the open stream. When the training
  split is used up it starts again from its start (the next *epoch*), continuing the
  packing, so a short corpus serves any number of steps; its :meth:`state_dict
  <TrainingStream.state_dict>` (epoch, reader position, the partial row it carries)
  resumes it exactly.
- :class:`IntervalFeed` takes ``interval`` batches at a time as one ``(interval, B,
  seq_len + 1)`` int32 array on a background thread (bounded queue, device transfer on
  the thread) and hands them to the host loop with the stream's state as of the end
  of that interval, which a checkpoint at that step stores.
- :func:`streamed_windows` builds the in-memory windows and the :class:`ShardStream`.
- :func:`offline_shards` writes the standard library's pydoc topics as a shard
  directory (no download), the default of a streamed config without ``text_path``.

Multi-process runs: every process opens the same stream (all shards, the same order;
no ``process_index`` split), so every process holds identical batches and the
replicated interval array is consistent across processes. Each member of the program
trains on the same batches in the same order: equal token budgets.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from grokjax.data.text import (
    ByteTokenizer,
    PackedStream,
    ShardReader,
    find_shards,
    gpt2_tokenizer,
    write_shard,
)
from grokjax.errors import DataError

__all__ = [
    "IntervalFeed",
    "ShardStream",
    "StreamedWindows",
    "TrainingStream",
    "offline_shards",
    "streamed_windows",
]


def _tokenizer(name: str, vocab_dir: str) -> Any:
    return ByteTokenizer() if name == "bytes" else gpt2_tokenizer(vocab_dir)


class TrainingStream:
    """A :class:`PackedStream` over the training split that repeats from its start.

    ``start`` is the reader's state where epoch 0 begins (after documents held out for
    validation; ``None``: the beginning). Rows continue across the epoch boundary (the
    packer's partial row is kept), so epoch ``e + 1`` reads the same documents as
    epoch ``e``, packed at another offset.
    """

    def __init__(self, spec: ShardStream, state: dict[str, Any] | None = None) -> None:
        self.spec = spec
        reader = ShardReader(spec.root, "train", on_error=spec.on_error)
        self.packed = PackedStream(
            reader,
            seq_len=spec.seq_len,
            batch_size=spec.batch_size,
            tokenizer=_tokenizer(spec.tokenizer, spec.vocab_dir),
        )
        self.epoch = 0
        if state is not None:
            self.load_state_dict(state)
        elif spec.start is not None:
            reader.load_state_dict(spec.start)

    def state_dict(self) -> dict[str, Any]:
        """The position as JSON-able data: ``{"epoch", "packed"}``."""
        return {"epoch": self.epoch, "packed": self.packed.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = state["epoch"]
        self.packed.load_state_dict(state["packed"])

    def __iter__(self) -> TrainingStream:
        return self

    def __next__(self) -> np.ndarray:
        """The next ``(batch_size, seq_len + 1)`` int32 batch."""
        for _ in range(2):  # a second end in a row: the split holds less than a batch
            try:
                return next(self.packed)
            except StopIteration:
                # the next epoch: the reader from its start, the partial row kept
                self.epoch += 1
                reader = ShardReader(self.spec.root, "train", on_error=self.spec.on_error)
                if self.spec.start is not None:
                    reader.load_state_dict(self.spec.start)
                self.packed.reader = reader
        raise DataError(
            f"{self.spec.root}: the training split holds too little text for one batch of "
            f"{self.spec.batch_size} × {self.spec.seq_len + 1} tokens; add shards, or use a "
            "smaller batch_size or seq_len."
        )


@dataclass(frozen=True)
class ShardStream:
    """How to open a run's training stream (:class:`TrainingStream`).

    ``start`` is the reader's state where training begins (``None``: the first line of
    every shard).
    """

    root: str
    seq_len: int
    batch_size: int
    tokenizer: str = "bytes"
    vocab_dir: str = ""
    on_error: str = "raise"
    start: dict[str, Any] | None = field(default=None, compare=False)

    def open(self, state: dict[str, Any] | None = None) -> TrainingStream:
        """The stream at ``state`` (a :meth:`TrainingStream.state_dict`) or its start."""
        return TrainingStream(self, state)


class IntervalFeed:
    """The host side of streamed training: one ``(interval, B, seq_len + 1)`` int32
    array per evaluation interval, produced ahead on a background thread.

    The thread takes ``interval`` batches from ``stream``, stacks them, records
    ``stream.state_dict()`` (the position after exactly these batches), puts the array
    on the devices (``put``, e.g. a replicated ``jax.device_put``) and queues both; the
    queue holds ``depth`` intervals, so the thread reads at most ``depth`` intervals
    ahead of the loop. :meth:`next` returns them in order; an exception raised on the
    thread (a :class:`~grokjax.data.text.MalformedRecord` naming the file and line) is
    raised again by the :meth:`next` call of the interval that needed the failing
    batch. :meth:`close` stops the thread (also when the run stops early).
    """

    _POLL = 0.1  # seconds between checks of the stop flag while blocked

    def __init__(
        self,
        stream: TrainingStream,
        interval: int,
        put: Callable[[np.ndarray], Any] | None = None,
        depth: int = 2,
    ) -> None:
        self.stream, self.interval = stream, interval
        self._put_device = put or (lambda x: x)
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="grokjax-feed", daemon=True)
        self._thread.start()

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                batches = np.stack([next(self.stream) for _ in range(self.interval)])
                state = self.stream.state_dict()
                if not self._offer((self._put_device(batches), state, None)):
                    return
        except BaseException as err:  # handed to the loop, raised there
            self._offer((None, None, err))

    def _offer(self, item: tuple) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self._POLL)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> tuple[Any, dict[str, Any]]:
        """``(batches, state)`` of the next interval: the ``(interval, B, seq_len + 1)``
        array and the stream's state after it."""
        while True:
            try:
                batches, state, err = self._queue.get(timeout=self._POLL)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    raise RuntimeError("the stream's feed thread stopped") from None
                continue
            if err is not None:
                raise err
            return batches, state

    def close(self) -> None:
        """Stop the thread and drop what it queued."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=10)


@dataclass(frozen=True)
class StreamedWindows:
    """The in-memory part of a streamed corpus.

    ``tokens_T`` is ``[validation windows | training sample windows]``, each window
    ``seq_len + 1`` tokens; ``val_idx`` and ``train_idx`` are their starts.
    """

    tokens_T: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    vocab_size: int
    stream: ShardStream

    @property
    def num_train(self) -> int:
        return len(self.train_idx)

    @property
    def num_val(self) -> int:
        return len(self.val_idx)


def _read_tokens(reader: ShardReader, tok: Any, count: int) -> list[int]:
    ids: list[int] = []
    for doc in reader:
        ids.extend(tok.encode(doc))
        ids.append(tok.eos_id)
        if len(ids) >= count:
            break
    return ids


def streamed_windows(
    root: str,
    *,
    seq_len: int,
    batch_size: int,
    val_windows: int,
    tokenizer: str = "bytes",
    vocab_dir: str = "",
    on_error: str = "raise",
) -> StreamedWindows:
    """The validation windows, a training sample and the training stream of ``root``.

    Validation: ``val_windows`` consecutive, non-overlapping windows of ``seq_len + 1``
    tokens from the start of the shards' ``validation`` split when there is one; else
    from the first documents of the ``train`` split, which are then held out: the
    training stream starts after them (the rest of the last one read is dropped).
    Training sample: the first ``val_windows`` windows the training stream yields
    (what probes see as ``ctx.train``; training itself reads the stream).
    """
    tok = _tokenizer(tokenizer, vocab_dir)
    window = seq_len + 1
    need = val_windows * window
    start = None
    try:
        find_shards(root, "validation")
        split, where = "validation", f"{root}/validation"
    except FileNotFoundError:
        split, where = "train", f"the first documents of {root}/train"
    source = ShardReader(root, split, on_error=on_error)
    val = _read_tokens(source, tok, need)
    if len(val) < need:
        raise DataError(
            f"{where} hold {len(val)} tokens: too few for {val_windows} validation windows "
            f"of {window} tokens; use fewer val_windows or a shorter seq_len."
        )
    if split == "train":  # training starts after the held-out documents
        start = source.state_dict()
    spec = ShardStream(root, seq_len, batch_size, tokenizer, vocab_dir, on_error, start)
    sample_stream = spec.open()
    sample: list[np.ndarray] = []
    while sum(len(b) for b in sample) < val_windows:
        sample.append(next(sample_stream))
    train = np.concatenate(sample)[:val_windows]
    tokens = np.concatenate([np.asarray(val[:need], np.int32), train.reshape(-1)])
    tokens.setflags(write=False)
    val_idx = (window * np.arange(val_windows)).astype(np.int32)
    train_idx = (need + window * np.arange(val_windows)).astype(np.int32)
    return StreamedWindows(tokens, train_idx, val_idx, tok.vocab_size, spec)


def offline_shards(root: str | pathlib.Path | None = None, *, shards: int = 4) -> pathlib.Path:
    """The standard library's pydoc topics as a SlimPajama-layout shard directory.

    Every distinct topic text is a document (some topics share one); every tenth (in
    key order) goes to ``validation/``,
    the others round-robin to ``shards`` zstd shards of ``train/chunk1/``. ``root``
    defaults to a folder under the temporary directory named after the text's hash; an
    existing directory is reused. The folder is written under another name and renamed
    into place, so processes that write it at once do not see a partial one.
    """
    from pydoc_data.topics import topics

    keys = sorted(topics)
    if root is None:
        digest = hashlib.sha256("".join(topics[k] for k in keys).encode()).hexdigest()[:12]
        root = pathlib.Path(tempfile.gettempdir()) / f"grokjax-pydoc-shards-{digest}"
    root = pathlib.Path(root)
    if (root / "train").is_dir():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    texts = list(dict.fromkeys(topics[k] for k in keys))
    docs = [{"text": t, "meta": {"redpajama_set_name": "pydoc"}} for t in texts]
    write_shard(tmp / "validation/chunk1/0.jsonl.zst", docs[::10])
    train = [d for i, d in enumerate(docs) if i % 10]
    for s in range(shards):
        write_shard(tmp / f"train/chunk1/{s}.jsonl.zst", train[s::shards])
    try:
        os.rename(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (root / "train").is_dir():  # not another process's copy: a real failure
            raise
    return root
