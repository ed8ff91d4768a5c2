"""The streaming text pipeline on a small SlimPajama-layout directory of offline text."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from grokjax.data import (
    ByteTokenizer,
    MalformedRecord,
    PackedStream,
    ShardReader,
    gpt2_tokenizer,
    offline_text,
    write_shard,
)

SETS = ("RedPajamaC4", "RedPajamaGithub", "RedPajamaWikipedia")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """60 documents from the standard library's pydoc text over 4 shards in 2 chunks
    (zstd and plain), set names cycling through SETS; returns (root, shard → records)."""
    text = offline_text().decode("utf-8")
    docs = [text[i * 700 : (i + 1) * 700] for i in range(60)]
    root = tmp_path_factory.mktemp("slimpajama")
    shards = {}
    for s, name in enumerate(
        ["chunk1/a.jsonl.zst", "chunk1/b.jsonl", "chunk2/c.jsonl.zst", "chunk2/d.jsonl.zst"]
    ):
        records = [
            {"text": docs[j], "meta": {"redpajama_set_name": SETS[j % 3]}} for j in range(s, 60, 4)
        ]
        shards[write_shard(root / "train" / name, records)] = records
    write_shard(root / "validation/chunk1/v.jsonl.zst", [{"text": "held out"}])
    return root, shards


def round_robin(shards, keep=lambda r: True):
    lists = [recs for _, recs in sorted(shards.items())]
    out = []
    for j in range(max(map(len, lists))):
        out += [lst[j]["text"] for lst in lists if j < len(lst) and keep(lst[j])]
    return out


def test_reader_interleaves_shards_and_filters_sets(corpus):
    root, shards = corpus
    assert list(ShardReader(root)) == round_robin(shards)
    no_github = list(ShardReader(root, exclude_sets=["RedPajamaGithub"]))
    assert no_github == round_robin(
        shards, lambda r: r["meta"]["redpajama_set_name"] != "RedPajamaGithub"
    )
    assert len(no_github) == 40
    wiki = list(ShardReader(root, include_sets=["RedPajamaWikipedia"]))
    assert len(wiki) == 20
    assert list(ShardReader(root, "validation")) == ["held out"]


def test_packing_concatenates_documents_with_eos(corpus):
    root, shards = corpus
    tok = ByteTokenizer()
    stream = PackedStream(ShardReader(root), seq_len=63, batch_size=4, tokenizer=tok)
    batches = list(stream)
    flat = np.concatenate([b.reshape(-1) for b in batches])
    expected = []
    for doc in round_robin(shards):
        expected += [*tok.encode(doc), tok.eos_id]
    assert batches[0].shape == (4, 64) and batches[0].dtype == np.int32
    np.testing.assert_array_equal(flat, expected[: flat.size])
    assert len(expected) - flat.size < 4 * 64  # only the last partial batch is dropped


def test_stream_resumes_exactly_where_it_stopped(corpus):
    root, _ = corpus
    full = list(
        PackedStream(ShardReader(root, exclude_sets=["RedPajamaGithub"]), seq_len=31, batch_size=3)
    )
    first = PackedStream(
        ShardReader(root, exclude_sets=["RedPajamaGithub"]), seq_len=31, batch_size=3
    )
    head = [next(first) for _ in range(17)]
    saved = json.loads(json.dumps(first.state_dict()))  # survives a round trip through JSON
    resumed = PackedStream(
        ShardReader(root, exclude_sets=["RedPajamaGithub"]), seq_len=31, batch_size=3
    )
    resumed.load_state_dict(saved)
    rest = list(resumed)
    assert len(head) + len(rest) == len(full)
    for got, want in zip(head + rest, full, strict=True):
        np.testing.assert_array_equal(got, want)


def test_processes_read_disjoint_shards(corpus):
    root, shards = corpus
    parts = [list(ShardReader(root, process_index=i, process_count=2)) for i in range(2)]
    assert not set(parts[0]) & set(parts[1])
    assert sorted(parts[0] + parts[1]) == sorted(round_robin(shards))
    with pytest.raises(ValueError, match="5 processes"):
        ShardReader(root, process_count=5)


def test_malformed_lines_name_file_and_line_or_are_counted(tmp_path):
    shard = tmp_path / "train/chunk1/bad.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_text(
        '{"text": "ok"}\n{"text": "fine"}\n{"text": broken\n{"meta": {}}\n{"text": "last"}\n'
    )
    with pytest.raises(MalformedRecord, match=r"bad\.jsonl, line 3"):
        list(ShardReader(tmp_path))
    reader = ShardReader(tmp_path, on_error="skip")
    assert list(reader) == ["ok", "fine", "last"] and reader.skipped == 2


def test_missing_data_and_vocabulary_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="SlimPajama-layout"):
        ShardReader(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"vocab\.bpe"):
        gpt2_tokenizer(tmp_path)


def test_resume_refuses_another_directory(corpus, tmp_path):
    root, _ = corpus
    write_shard(tmp_path / "train/c/x.jsonl", [{"text": "x"}])
    state = ShardReader(root).state_dict()
    with pytest.raises(ValueError, match="other shards"):
        ShardReader(tmp_path).load_state_dict(state)
    assert pathlib.Path(state["shards"][0]).exists()
