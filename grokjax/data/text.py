"""Streaming text for language models: SlimPajama-layout shards, tokenizers, packing.

A SlimPajama-layout directory holds ``{train,validation,test}/chunk*/…`` shards of
JSON lines (``.jsonl.zst`` or ``.jsonl``), one record per line,
``{"text": …, "meta": {"redpajama_set_name": "RedPajamaC4"}}``.

- :class:`ShardReader` streams the documents of one split, interleaving shards
  round-robin, filtering source sets, and can save and restore its exact position.
- :class:`ByteTokenizer` (the default; 256 byte ids + an end-of-document id) and
  :func:`gpt2_tokenizer` (tiktoken's GPT-2 BPE, from vocabulary files on local disk).
- :class:`PackedStream` concatenates tokenized documents (each followed by the
  end-of-document id) and cuts them into ``(batch, seq_len + 1)`` arrays; its state
  includes the partial sequence it carries, so a resumed stream continues with
  exactly the batches the uninterrupted one would have produced.

Multi-process runs give each process every ``process_count``-th shard
(``process_index`` first), so processes read disjoint data.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "ByteTokenizer",
    "DamagedShard",
    "MalformedRecord",
    "PackedStream",
    "ShardReader",
    "find_shards",
    "gpt2_tokenizer",
    "write_shard",
]

_SUFFIXES = (".jsonl.zst", ".jsonl")


class MalformedRecord(ValueError):
    """A shard line that is not a JSON record with a string ``"text"``."""


class DamagedShard(MalformedRecord):
    """A shard file that cannot be read to its end (cut off, or not zstd data)."""


def find_shards(root: str | pathlib.Path, split: str = "train") -> list[pathlib.Path]:
    """The split's shard files (``.jsonl.zst`` / ``.jsonl`` under ``root/split``), sorted."""
    base = pathlib.Path(root) / split
    if not base.is_dir():
        raise FileNotFoundError(
            f"{base} is not a directory: a SlimPajama-layout root has "
            "{train,validation,test}/chunk*/ shard folders."
        )
    files = sorted(p for p in base.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
    if not files:
        raise FileNotFoundError(f"no .jsonl.zst or .jsonl shards under {base}.")
    return files


def _zst_chunks(path: pathlib.Path) -> Iterator[bytes]:
    """The decompressed bytes of every zstd frame of ``path``; a file that ends inside a
    frame (a cut-off download or copy) or is not zstd data raises :class:`DamagedShard`."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    frame = dctx.decompressobj()
    with path.open("rb") as raw:
        try:
            while chunk := raw.read(1 << 16):
                while chunk:
                    if frame.eof:  # the next frame of a multi-frame file
                        frame = dctx.decompressobj()
                    yield frame.decompress(chunk)
                    chunk = frame.unused_data if frame.eof else b""
        except zstandard.ZstdError as err:
            raise DamagedShard(f"{path}: not readable zstd data ({err}).") from None
    if not frame.eof:
        raise DamagedShard(f"{path}: cut off inside a zstd frame (the file is incomplete).")


def _open_lines(path: pathlib.Path) -> Iterator[bytes]:
    """The lines of a shard as bytes (decoded per line, so a bad byte names its line)."""
    if not path.name.endswith(".zst"):
        with path.open("rb") as f:
            yield from f
        return
    pending = b""
    for chunk in _zst_chunks(path):
        *lines, pending = (pending + chunk).split(b"\n")
        yield from (line + b"\n" for line in lines)
    if pending:
        yield pending


def write_shard(path: str | pathlib.Path, records: Sequence[dict[str, Any]]) -> pathlib.Path:
    """Write ``records`` as JSON lines, zstd-compressed when ``path`` ends in ``.zst``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in records).encode("utf-8")
    if path.name.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path


class ShardReader:
    """Documents of one split, round-robin over its shards, resumable.

    Document ``k`` comes from the next shard in turn that still has lines; lines whose
    ``meta.redpajama_set_name`` is in ``exclude_sets`` (or not in ``include_sets``, when
    given) are passed over. A malformed line (not JSON, not UTF-8, no string ``text``)
    raises :class:`MalformedRecord` naming the file and line (``on_error="raise"``) or
    is skipped and counted in ``skipped`` (``"skip"``); so is a shard that cannot be
    read to its end (:class:`DamagedShard`: cut off inside a zstd frame, or not zstd
    data), whose remaining lines count as one skip. :meth:`state_dict` /
    :meth:`load_state_dict` save and restore the position (lines consumed per shard and
    whose turn it is).

    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_shard(root / "train/chunk1/a.jsonl", [{"text": "a1"}, {"text": "a2"}])
    >>> _ = write_shard(root / "train/chunk1/b.jsonl", [{"text": "b1"}])
    >>> list(ShardReader(root))
    ['a1', 'b1', 'a2']
    """

    def __init__(
        self,
        root: str | pathlib.Path,
        split: str = "train",
        *,
        exclude_sets: Sequence[str] = (),
        include_sets: Sequence[str] | None = None,
        on_error: str = "raise",
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: choose 'raise' or 'skip'.")
        if not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index={process_index} must lie in [0, process_count={process_count})."
            )
        shards = find_shards(root, split)
        if len(shards) < process_count:
            raise ValueError(
                f"{len(shards)} shards cannot be split over {process_count} processes: every "
                "process needs at least one shard."
            )
        self.shards = shards[process_index::process_count]
        self.exclude_sets = frozenset(exclude_sets)
        self.include_sets = None if include_sets is None else frozenset(include_sets)
        self.on_error = on_error
        self.consumed = [0] * len(self.shards)  # lines read (kept or not) per shard
        self.turn = 0
        self.skipped = 0
        self._iters: list[Iterator[str] | None] = [None] * len(self.shards)
        self._done = [False] * len(self.shards)

    def state_dict(self) -> dict[str, Any]:
        return {
            "shards": [str(p) for p in self.shards],
            "consumed": list(self.consumed),
            "turn": self.turn,
            "skipped": self.skipped,
            "done": list(self._done),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["shards"] != [str(p) for p in self.shards]:
            raise ValueError(
                "the saved reader state belongs to other shards; resume with the same root, "
                "split and process_index/process_count."
            )
        self.consumed = list(state["consumed"])
        self.turn = state["turn"]
        self.skipped = state["skipped"]
        self._done = list(state["done"])
        self._iters = [None] * len(self.shards)

    def _lines(self, i: int) -> Iterator[str]:
        if self._iters[i] is None:
            it = _open_lines(self.shards[i])
            for _ in range(self.consumed[i]):  # resume: skip what was read
                next(it, None)
            self._iters[i] = it
        return self._iters[i]

    def _parse(self, i: int, line: bytes) -> str | None:
        where = f"{self.shards[i]}, line {self.consumed[i]}"
        try:
            record = json.loads(line.decode("utf-8"))
            text = record["text"]
            if not isinstance(text, str):
                raise TypeError("'text' is not a string")
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
            if self.on_error == "skip":
                self.skipped += 1
                return None
            raise MalformedRecord(
                f"{where}: not a JSON record with a string 'text' ({err}); fix or remove the "
                "line, or read with on_error='skip' to skip and count such lines."
            ) from None
        meta = record.get("meta") or {}
        name = meta.get("redpajama_set_name") if isinstance(meta, dict) else None
        if name in self.exclude_sets:
            return None
        if self.include_sets is not None and name not in self.include_sets:
            return None
        return text

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while not all(self._done):
            i = self.turn
            if self._done[i]:
                self.turn = (i + 1) % len(self.shards)
                continue
            try:
                line = next(self._lines(i), None)
            except DamagedShard:
                if self.on_error == "raise":
                    raise
                self.skipped += 1  # the rest of a damaged shard counts as one skip
                line = None
            if line is None:
                self._done[i] = True
                self.turn = (i + 1) % len(self.shards)
                continue
            self.consumed[i] += 1
            self.turn = (i + 1) % len(self.shards)
            if not line.strip():
                continue
            text = self._parse(i, line)
            if text is not None:
                return text
        raise StopIteration


@dataclass(frozen=True)
class ByteTokenizer:
    """UTF-8 bytes as ids 0–255, and ``eos_id = 256`` between documents (vocab 257).

    >>> ByteTokenizer().encode("hé")
    [104, 195, 169]
    """

    vocab_size: int = 257
    eos_id: int = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


@dataclass(frozen=True)
class _TiktokenTokenizer:
    encoding: Any
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.encoding.decode(list(ids))


def gpt2_tokenizer(vocab_dir: str | pathlib.Path) -> _TiktokenTokenizer:
    """GPT-2's BPE through tiktoken, built from ``vocab.bpe`` and ``encoder.json`` in
    ``vocab_dir`` (nothing is downloaded). End of document: ``<|endoftext|>`` (50256).
    """
    vocab_dir = pathlib.Path(vocab_dir)
    files = [vocab_dir / "vocab.bpe", vocab_dir / "encoder.json"]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"GPT-2 BPE needs its vocabulary files on local disk; missing {missing}. Copy "
            "vocab.bpe and encoder.json (from the GPT-2 release) there, or use the byte "
            "tokenizer (the default)."
        )
    try:
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    except ImportError as err:
        raise ImportError(
            "the GPT-2 tokenizer needs tiktoken: pip install tiktoken (or use the byte "
            "tokenizer, the default)."
        ) from err
    ranks = data_gym_to_mergeable_bpe_ranks(str(files[0]), str(files[1]))
    encoding = tiktoken.Encoding(
        name="gpt2_local",
        pat_str=r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
    return _TiktokenTokenizer(encoding, 50257, 50256)


class PackedStream:
    """``(batch_size, seq_len + 1)`` int32 arrays of packed documents, resumable.

    Documents are tokenized, each followed by ``tokenizer.eos_id``, concatenated and cut
    into rows of ``seq_len + 1`` tokens (inputs ``row[:-1]``, targets ``row[1:]``); a
    row continues the previous one's document. The stream ends when the reader does
    (a last partial batch is dropped).

    >>> import tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> _ = write_shard(root / "train/c/0.jsonl", [{"text": "abcdef"}] * 3)
    >>> batch = next(PackedStream(ShardReader(root), seq_len=4, batch_size=2))
    >>> batch.shape, bytes(batch[0].tolist())
    ((2, 5), b'abcde')
    """

    def __init__(self, reader: ShardReader, *, seq_len: int, batch_size: int, tokenizer=None):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len={seq_len} and batch_size={batch_size} must be >= 1.")
        self.reader = reader
        self.tokenizer = tokenizer or ByteTokenizer()
        self.seq_len, self.batch_size = seq_len, batch_size
        self.buffer: list[int] = []
        self.batches = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "reader": self.reader.state_dict(),
            "buffer": list(self.buffer),
            "batches": self.batches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reader.load_state_dict(state["reader"])
        self.buffer = list(state["buffer"])
        self.batches = state["batches"]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        need = self.batch_size * (self.seq_len + 1)
        while len(self.buffer) < need:
            text = next(self.reader)  # StopIteration ends the stream
            self.buffer.extend(self.tokenizer.encode(text))
            self.buffer.append(self.tokenizer.eos_id)
        rows, self.buffer = self.buffer[:need], self.buffer[need:]
        self.batches += 1
        return np.asarray(rows, np.int32).reshape(self.batch_size, self.seq_len + 1)
