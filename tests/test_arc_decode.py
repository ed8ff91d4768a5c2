"""Two-attempt decoding of ARC test outputs (grokjax.data.arc_decode).

Tiny generated tasks (colour permutations of 1–2 sided grids, one demonstration) packed
to T = 32, a one-block 2-D RoPE decoder, and logits functions built from the labels
(a "cheating" one that knows the next true token by position, and variants) whose
beam-search outcome is known in advance.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TraceCounter
from flax import nnx

from grokjax.data import arc_generate
from grokjax.data import arc_tokens as at
from grokjax.data.arc_decode import (
    OUTPUT_TOKENS,
    attempts_exact,
    beam_decode,
    greedy_decode,
    make_attempts_fn,
    output_starts,
    task_attempts,
)
from grokjax.data.task import SpanTask
from grokjax.nn import Decoder
from grokjax.nn.kinds import DecoderModel, _decoder_inputs

T = 32
V = at.VOCAB_SIZE
# compiled calls (op-by-op dispatch would compile each small operation instead)
beam_jit = jax.jit(
    beam_decode,
    static_argnums=(0, 4, 5),
    static_argnames=("logits_fn", "max_new", "beams", "constrain", "return_rows"),
)
greedy_jit = jax.jit(
    greedy_decode, static_argnums=(0, 4), static_argnames=("logits_fn", "max_new", "constrain")
)


@pytest.fixture(scope="module")
def packed() -> at.PackedArc:
    tasks = arc_generate.generate_tasks(
        "colour_permutation", 6, 0, min_side=1, max_side=2, num_train=1
    )
    packed = at.pack(at.serialize_tasks(tasks), T)
    assert packed.num_dropped == 0
    return packed


def model_fn(seed: int):
    """A random tiny decoder: ``(logits_fn, params)``."""
    model = Decoder(
        V, seq_len=T, depth=1, width=16, heads=2, positions="rope2d", num_segments=8,
        rngs=nnx.Rngs(seed),
    )  # fmt: skip
    graphdef, params = nnx.split(model)
    return (lambda p, x: nnx.merge(graphdef, p)(**_decoder_inputs(x))), params


def cheat_fn(params, x_NT4):
    """Logits 8 on the true next token at each labelled position (``params``: the labels
    ``(B, T)``; ``beam_decode`` lays row ``b``'s beams out at ``b·K … b·K + K − 1``);
    elsewhere 8 on ``PAD``."""
    labels_BT = params
    labels_NT = jnp.repeat(labels_BT, x_NT4.shape[0] // labels_BT.shape[0], axis=0)
    return 8.0 * jax.nn.one_hot(jnp.where(labels_NT >= 0, labels_NT, at.PAD), V)


def truths(packed) -> list[list[int]]:
    """Each row's true output: the labels from the OUTPUT marker to PAIR_END."""
    return [[int(v) for v in row if v != at.IGNORE] for row in packed.labels_NT]


def reference_row(x_T4: np.ndarray, start: int, generated) -> np.ndarray:
    """The row with ``generated`` written after ``start``, coordinates as
    ``arc_tokens.serialize_task`` gives them (a loop over tokens, for the check)."""
    row = np.array(x_T4)
    r = c = 0
    for j, token in enumerate(generated):
        if token == at.PAIR_END:
            coords = (r, 0)
        else:
            coords = (r, c)
        row[start + 1 + j] = (token, *coords, x_T4[start, 3])
        if token == at.ROW_END:
            r, c = r + 1, 0
        elif token < at.ROW_END:
            c += 1
        else:
            break
    return row


def trimmed(tokens_L) -> list[int]:
    return [int(t) for t in tokens_L if t != at.PAD]


def test_cheating_logits_reproduce_every_output_and_its_coordinates(packed):
    x, labels = jnp.asarray(packed.inputs_NT4), jnp.asarray(packed.labels_NT)
    start = output_starts(labels)
    max_new = T - 1 - int(start.min())
    tokens, scores, done, rows = beam_jit(cheat_fn, labels, x, start, max_new, 2, return_rows=True)
    greedy, _, greedy_done = greedy_jit(cheat_fn, labels, x, start, max_new)
    for b, truth in enumerate(truths(packed)):
        assert trimmed(tokens[b, 0]) == truth
        assert trimmed(greedy[b]) == truth
        # the written-in channels are those of serialize_task: the packed row itself
        np.testing.assert_array_equal(rows[b, 0], packed.inputs_NT4[b])
        # the runner-up is another output with its own coordinates
        alt = trimmed(tokens[b, 1])
        assert alt != truth
        np.testing.assert_array_equal(
            rows[b, 1], reference_row(packed.inputs_NT4[b], int(start[b]), alt)
        )
    assert bool(done[:, 0].all()) and bool(greedy_done.all())
    assert bool((scores[:, 0] >= scores[:, 1]).all())
    exact1, exact2 = attempts_exact(tokens, done, labels, start)
    assert exact1.tolist() == exact2.tolist() == [True] * len(truths(packed))


def test_truth_second_at_one_position_is_exact_at_two_only(packed, rng):
    labels = np.array(packed.labels_NT)
    start = np.asarray(output_starts(labels))
    logits = 6.0 * np.eye(V, dtype=np.float32)[np.where(labels >= 0, labels, at.PAD)]
    wrong = []
    for b, truth in enumerate(truths(packed)):
        t = start[b] + rng.integers(len(truth) - 1)  # not the final PAIR_END
        w = rng.choice([v for v in OUTPUT_TOKENS if v != labels[b, t]])
        logits[b, t, labels[b, t]], logits[b, t, w] = 5.0, 6.0
        wrong.append((t - start[b], w))

    def fn(params, x_NT4):
        return jnp.repeat(params, x_NT4.shape[0] // params.shape[0], axis=0)

    max_new = T - 1 - int(start.min())
    tokens, _, done = beam_jit(fn, jnp.asarray(logits), packed.inputs_NT4, start, max_new)
    exact1, exact2 = attempts_exact(tokens, done, labels, start)
    assert not exact1.any() and bool(exact2.all())
    for b, truth in enumerate(truths(packed)):
        j, w = wrong[b]
        best = [*truth[:j], int(w), *truth[j + 1 :]]
        assert trimmed(tokens[b, 0]) == (best[: j + 1] if w == at.PAIR_END else best)
    greedy, _, greedy_done = greedy_jit(fn, jnp.asarray(logits), packed.inputs_NT4, start, 8)
    exact_greedy, _ = attempts_exact(greedy[:, None], greedy_done[:, None], labels, start)
    assert not exact_greedy.any()


def test_beam_scores_and_top_k_match_brute_force(packed):
    """Every sequence of ≤ 3 output tokens (stopping at PAIR_END) scored in float64 from
    the same logits: width 2 returns sequences with their true scores; width 12² =
    144 keeps every 2-token prefix, so its 144 beams are exactly the 144 best."""
    logits_fn, params = model_fn(1)
    rows = [2]
    x, labels = packed.inputs_NT4[rows], packed.labels_NT[rows]
    start = np.asarray(output_starts(labels))
    out = [int(v) for v in OUTPUT_TOKENS]
    # all sequences, and the prefixes whose next-token distribution they need
    seqs = [s for n in (1, 2, 3) for s in itertools.product(out, repeat=n)]
    # a hypothesis ends at PAIR_END or after 3 tokens
    seqs = [s for s in seqs if at.PAIR_END not in s[:-1] and (len(s) == 3 or s[-1] == at.PAIR_END)]
    prefixes = sorted({s[:-1] for s in seqs}, key=len)
    for b in range(len(rows)):
        batch = np.stack([reference_row(x[b], start[b], p) for p in prefixes])
        logits = np.asarray(jax.jit(logits_fn)(params, jnp.asarray(batch)), np.float64)
        at_P = start[b] + np.array([len(p) for p in prefixes])
        z = logits[np.arange(len(prefixes)), at_P]
        z -= z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # float64 log-softmax
        index = {p: i for i, p in enumerate(prefixes)}
        brute = {s: sum(logp[index[s[:j]], s[j]] for j in range(len(s))) for s in seqs}

        def check(tokens_KL, scores_K, done_K, b=b, brute=brute):
            for k in range(len(scores_K)):
                seq = tuple(trimmed(tokens_KL[k]))
                assert done_K[k] == (seq[-1] == at.PAIR_END)
                np.testing.assert_allclose(scores_K[k], brute[seq], rtol=1e-5, atol=1e-5)

        tokens, scores, done = beam_jit(logits_fn, params, x[b : b + 1], start[b : b + 1], 3)
        check(tokens[0], scores[0], done[0])
        tokens, scores, done, beam_rows = beam_jit(
            logits_fn, params, x[b : b + 1], start[b : b + 1], 3, beams=144, return_rows=True
        )
        check(tokens[0], scores[0], done[0])
        for k in range(144):  # PAIR_END after a cell too sits at (rows so far, 0)
            want = reference_row(x[b], start[b], trimmed(tokens[0, k]))
            np.testing.assert_array_equal(beam_rows[0, k], want)
        best = sorted(brute.values(), reverse=True)[:144]
        np.testing.assert_allclose(scores[0], best, rtol=1e-5, atol=1e-5)
        top2 = sorted(brute, key=brute.get, reverse=True)[:2]
        assert [tuple(trimmed(t)) for t in tokens[0, :2]] == top2


def test_greedy_is_the_teacher_forced_argmax_criterion(packed, rng):
    """Random model logits plus a per-row nudge towards the truth, so some rows decode
    exactly and some do not: greedy's exactness, and the length of its correct prefix,
    are those of teacher forcing (whole-vocabulary argmax, as the probe counts it,
    without the constraint; output-vocabulary argmax with it)."""
    logits_fn, params = model_fn(2)
    x, labels = jnp.asarray(packed.inputs_NT4), jnp.asarray(packed.labels_NT)
    start = output_starts(labels)
    nudge_B = jnp.asarray(rng.uniform(0.0, 6.0, size=len(truths(packed))), jnp.float32)

    def fn(p, x_NT4):
        model_params, labels_BT = p
        onehot = jax.nn.one_hot(jnp.where(labels_BT >= 0, labels_BT, at.PAD), V)
        return logits_fn(model_params, x_NT4) + nudge_B[:, None, None] * onehot

    p = (params, labels)
    forced = fn(p, x)  # teacher forcing: the true rows
    inside = labels != at.IGNORE
    masked = jnp.full((V,), -jnp.inf).at[OUTPUT_TOKENS].set(0.0)
    seen = set()
    for constrain, scores in ((False, forced), (True, forced + masked[None, None])):
        right = (jnp.argmax(scores, -1) == labels) & inside
        exact_forced = jnp.all(right | ~inside, -1)  # grokjax.analysis.arc's criterion
        right, inside_np = np.asarray(right), np.asarray(inside)
        first_miss = [
            int(np.argmin(np.append(r[i], False))) for r, i in zip(right, inside_np, strict=True)
        ]
        greedy, _, done = greedy_jit(fn, p, x, start, 20, constrain=constrain)
        exact, _ = attempts_exact(greedy[:, None], done[:, None], labels, start)
        assert exact.tolist() == exact_forced.tolist()
        for b, truth in enumerate(truths(packed)):
            ok = [g == t for g, t in zip(greedy[b].tolist(), truth, strict=False)] + [False]
            assert ok.index(False) == min(first_miss[b], len(truth))
        seen |= set(exact.tolist())
    assert seen == {True, False}  # the nudges made both outcomes happen


def test_full_rows_and_unfinished_beams_are_wrong_attempts(packed):
    """A row whose output does not fit before T (or max_new) ends unfinished."""
    labels = jnp.asarray(packed.labels_NT)
    start = output_starts(labels)
    n = [len(t) for t in truths(packed)]
    tokens, _, done = beam_jit(cheat_fn, labels, packed.inputs_NT4, start, min(n) - 1)
    assert not done.any()
    assert not any(attempts_exact(tokens, done, labels, start)[1].tolist())
    # a row cut one position short (T = length − 1): its PAIR_END would be at position T
    b = int(np.argmax(n))
    length = int(packed.lengths_N[b])
    x = packed.inputs_NT4[b : b + 1, : length - 1]
    y = packed.labels_NT[b : b + 1, : length - 1]
    s = output_starts(y)
    tokens, scores, done = beam_jit(cheat_fn, jnp.asarray(y), x, s, length - 2)
    assert not done.any() and bool(jnp.isfinite(scores).all())
    assert trimmed(tokens[0, 0]) == truths(packed)[b][:-1]


def test_decoding_compiles_once_per_batch_shape(packed):
    logits_fn, params = model_fn(3)
    _, params_b = model_fn(4)
    counted = TraceCounter(logits_fn)
    # a wrapper of its own: jit's trace cache is shared by every jit of one function
    decode = jax.jit(lambda p, x, s: beam_decode(counted, p, x, s, 6, 2))
    x, labels = packed.inputs_NT4, packed.labels_NT
    start = output_starts(labels)
    decode(params, x, start)
    traces = counted.count
    decode(params_b, x[::-1].copy(), start[::-1])
    assert decode._cache_size() == 1 and counted.count == traces
    fn = make_attempts_fn(logits_fn, max_new=6, chunk=4)
    fn(params, x, labels)
    fn(params_b, x[::-1].copy(), labels[::-1].copy())
    assert fn._cache_size() == 1


def test_task_attempts_on_validation_rows_in_chunks(packed):
    """A model kind on a span task's validation rows (5 rows in chunks of 2, so one
    padded chunk) gives what one batch of beam_decode gives; a kind whose logits know
    each row's output (found by its prompt) solves all of them."""
    n_val = 5
    task = SpanTask(
        inputs_N=jnp.asarray(packed.inputs_NT4),
        labels_N=jnp.asarray(packed.labels_NT),
        num_train=1,
        num_val=n_val,
        num_classes=V,
        vocab_size=V,
        seq_len=T,
        batch_size=1,
        sampling="epoch",
        facts={"num_segments": 8},
    )
    kind = DecoderModel(depth=1, width=16, heads=2, positions="rope2d")
    graphdef, params = nnx.split(kind.build(task, 0, "float32"))
    got = task_attempts(kind, graphdef, params, task, chunk=2, max_new=8)
    x, labels = task.inputs_N[1:], task.labels_N[1:]
    start = output_starts(labels)
    fn = kind.eval_logits_fn(graphdef, task)
    tokens, scores, done = beam_jit(fn, params, x, start, 8)
    np.testing.assert_array_equal(got.tokens_NKL, tokens)
    np.testing.assert_allclose(got.scores_NK, scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.done_NK, done)
    want = attempts_exact(tokens, done, labels, start)
    assert got.exact_at_1_N.tolist() == want[0].tolist()
    assert got.exact_at_2_N.tolist() == want[1].tolist()
    assert got.exact_at_1_N.shape == (n_val,)

    # each row's prompt: its tokens up to the test OUTPUT marker, -1 after it
    starts = output_starts(packed.labels_NT)
    prompts = jnp.where(jnp.arange(T)[None] <= starts[:, None], packed.inputs_NT4[..., 0], -1)

    def row_of(x_NT4):
        """Which packed rows' prompts ``x_NT4``'s rows start with, ``(N, M)``."""
        same = (x_NT4[:, None, :, 0] == prompts[None]) | (prompts[None] < 0)
        return jnp.all(same, -1)

    np.testing.assert_array_equal(row_of(packed.inputs_NT4), np.eye(len(prompts), dtype=bool))

    class Oracle:
        """A model kind whose logits put 8 on the true next token of the row whose
        prompt this row starts with."""

        def eval_logits_fn(self, graphdef, task):
            def fn(params, x_NT4):
                row_N = jnp.argmax(row_of(x_NT4), -1)
                return cheat_fn(jnp.asarray(packed.labels_NT)[row_N], x_NT4)

            return fn

    solved = task_attempts(Oracle(), None, None, task, chunk=2)
    assert solved.exact_at_1_N.tolist() == solved.exact_at_2_N.tolist() == [True] * n_val
