#!/usr/bin/env bash
# Verify grokjax on a CUDA machine: the Triton backend against the reference, the scan
# benchmark with its floors, a sweep of the Triton forward's options, trainer throughput.
#
# Run on the GPU machine from anywhere in the repository, with .whl/ from
# benchmarks/gpu_wheels.sh beside it when the machine is offline:
#
#   benchmarks/gpu_check.sh [--cpu-dry-run]
#
# Setup installs the wheels of .whl/ into /tmp/site (--no-index; PYTHONPATH puts them first)
# and grokjax itself without dependencies, then prints the device and versions. Then:
#   (a) pytest tests/test_kernels.py tests/test_selective_scan.py (the real Triton backend
#       against the reference on a GPU; Triton's interpreter tests run there too)
#   (b) benchmarks/scan_backends.py at (B, L, D, N) = (8, 2048, 1536, 16), float32 and
#       bfloat16: reference, associative and both Triton forwards, with their floors
#   (c) benchmarks/scan_backends.py --sweep: the Triton forward's launch options
#   (d) benchmarks/train_throughput.py: member scaling, EMA and MA recipes at 1 to 256 members
#       per program, each count in its own process: member-steps/s, peak device memory per
#       member, and the largest count that fits in the device's memory
# Each section has its own timeout, clamped so that all of them end within TOTAL_S; a
# section that fails or times out is recorded and the next one runs. Everything printed
# goes to $OUT/gpu_check.md when OUT is set, else to benchmarks/gpu_check_<UTC time>.md.
#
# --cpu-dry-run: every section at tiny sizes on this machine's CPU, with the Triton paths
# in Triton's interpreter and no installs; for checking this script, not the machine.
#
# Environment: PYTHON (python3; .venv/bin/python for a dry run), HBM_TBPS (the GPU's HBM
# bandwidth for the memory floor, TB/s; 4.8 is an H200's nominal), TOTAL_S (345: the tool
# that lends the GPU machine allows a few minutes per check).
set -uo pipefail # no -e: a failing section is recorded and the others still run
cd "$(dirname "$0")/.." || exit 1

DRY=0
if [[ ${1:-} == --cpu-dry-run ]]; then
	DRY=1
elif [[ $# -gt 0 ]]; then
	echo "usage: $0 [--cpu-dry-run]" >&2
	exit 2
fi

HBM_TBPS=${HBM_TBPS:-4.8}
if ((DRY)); then
	TOTAL_S=${TOTAL_S:-1800} # two slow CPU cores run the same sections
	if [[ -x .venv/bin/python ]]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
	export JAX_PLATFORMS=cpu
else
	TOTAL_S=${TOTAL_S:-345}
	PY=${PYTHON:-python3}
fi
export PYTHONUNBUFFERED=1 # sections are cut by timeouts: keep what they printed
DEADLINE=$((SECONDS + TOTAL_S))
STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
if [[ -n ${OUT:-} ]]; then
	REPORT=$OUT/gpu_check.md
else
	REPORT=benchmarks/gpu_check_$(date -u +%Y%m%d-%H%M%S).md
fi
FAILED=()

# The seconds a section may run: its own cap (three times that on a CPU dry run), or what
# is left of TOTAL_S less a margin for timeout's kill grace and the report, if smaller.
clamp() {
	local cap=$(($1 * (DRY ? 3 : 1))) left=$((DEADLINE - SECONDS - 20))
	if ((cap < left)); then echo "$cap"; else echo "$left"; fi
}

# section TITLE CAP_S COMMAND...: run COMMAND under its timeout, into the report.
section() {
	local title=$1 limit status rc start
	limit=$(clamp "$2")
	shift 2
	# shellcheck disable=SC2016 # markdown backticks, not a command substitution
	printf '\n## %s\n\n`%s`\n\n' "$title" "$*" >>"$REPORT"
	echo "== $title: $* (at most ${limit} s)"
	if ((limit < 10)); then
		echo "skipped: the ${TOTAL_S} s budget is spent" | tee -a "$REPORT"
		FAILED+=("$title: skipped, no time left")
		return
	fi
	start=$SECONDS
	echo '```' >>"$REPORT"
	# SIGINT first: Python stops with a traceback and pytest prints its summary.
	timeout --signal=INT --kill-after=15 "$limit" "$@" 2>&1 | tee -a "$REPORT"
	rc=${PIPESTATUS[0]}
	echo '```' >>"$REPORT"
	case $rc in
	0) status=ok ;;
	124 | 137) status="TIMED OUT after ${limit} s" ;;
	*) status="FAILED (exit $rc)" ;;
	esac
	printf '\n%s: %s in %d s\n' "$title" "$status" $((SECONDS - start)) | tee -a "$REPORT"
	[[ $status == ok ]] || FAILED+=("$title: $status")
}

setup() {
	if ((DRY)); then
		echo "dry run: no installs; the wheels a GPU machine would get:"
		ls .whl/*.whl 2>/dev/null || echo "(none: run benchmarks/gpu_wheels.sh)"
	else
		# (set -x): the report shows each install command
		if compgen -G ".whl/*.whl" >/dev/null; then
			(set -x && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
				--upgrade --target /tmp/site .whl/*.whl) || return 1
		else
			echo "no .whl/*.whl: using the packages already installed"
		fi
		# grokjax.kernels lives in kernels/ (a package-dir mapping), so a bare PYTHONPATH to
		# the repository cannot import it: an editable install maps it; else a plain one.
		if ! (set -x && "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e .); then
			echo "editable install failed; installing a copy into /tmp/site"
			(set -x && "$PY" -m pip install -q --no-index --no-deps --no-build-isolation \
				--upgrade --target /tmp/site .) || return 1
		fi
	fi
	echo
	nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
		--format=csv 2>&1 || echo "nvidia-smi: not available"
	"$PY" - <<'EOF'
"""Versions, devices, and whether each carried package's requirements are met here."""
import platform
import sys
from glob import glob
from importlib.metadata import PackageNotFoundError, distribution, version

from packaging.requirements import Requirement
from packaging.utils import parse_wheel_filename

print(f"python {platform.python_version()} at {sys.executable}")
names = [
    "jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda13-pjrt", "triton", "jax-triton", "torch",
    "flax", "optax", "orbax-checkpoint", "chex", "numpy", "tensorstore", "setuptools", "pytest",
    "grokjax",
]
for name in names:
    try:
        where = distribution(name).locate_file("")
        print(f"  {name} {version(name)} ({where})")
    except PackageNotFoundError:
        print(f"  {name}: not installed")
problems = []
carried = [parse_wheel_filename(p.split("/")[-1])[0] for p in glob(".whl/*.whl")]
for name in [*carried, "grokjax"]:
    try:
        requires = distribution(name).requires or []
    except PackageNotFoundError:
        problems.append(f"{name} is not installed")
        continue
    for line in requires:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            have = version(req.name)
        except PackageNotFoundError:
            problems.append(f"{name} needs {req}: not installed")
            continue
        if not req.specifier.contains(have, prereleases=True):
            problems.append(f"{name} needs {req}: found {have}")
print("requirements:", "; ".join(problems) if problems else "all met")

import jax  # noqa: E402

print(f"jax.devices(): {jax.devices()}; default backend {jax.default_backend()}")
try:
    import jax_triton

    print(f"jax_triton {jax_triton.__version__} imports")
except Exception as err:
    print(f"jax_triton does not import: {type(err).__name__}: {err}")
from grokjax.ops import triton_scan  # noqa: E402

print(f"grokjax.ops.triton_scan.available(): {triton_scan.available()}")
EOF
}

{
	printf '# GPU check %s\n\n' "$STAMP"
	# shellcheck disable=SC2016 # markdown backticks, not a command substitution
	printf -- '- command: `%s`%s\n' "benchmarks/gpu_check.sh $*" "$( ((DRY)) && echo ' (CPU dry run)')"
	printf -- '- machine: %s, %s\n' "$(hostname)" \
		"$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)"
	printf -- '- repository: %s\n' "$(git rev-parse HEAD 2>/dev/null || echo 'no git metadata')"
	printf -- '- PYTHON=%s HBM_TBPS=%s TOTAL_S=%s\n' "$PY" "$HBM_TBPS" "$TOTAL_S"
} >"$REPORT"

# The carried wheels before the image's own packages, in setup and every section.
((DRY)) || export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
# timeout runs programs, not shell functions: setup runs in a child bash.
export DRY PY
export -f setup
section "setup: wheels, grokjax, device facts" 60 bash -c setup
if [[ ${FAILED[*]:-} == *setup* ]]; then
	echo "setup failed: the sections below run with whatever is installed" | tee -a "$REPORT"
fi

SCAN=(benchmarks/scan_backends.py --hbm-tbps "$HBM_TBPS")
if ((DRY)); then
	SHAPE=(--shape 2 32 8 4)
	SCAN+=(--interpret --repeats 1 --rounds 1)
	TRAIN=(--members 1 2 --eval-every 5 --steps 10 --budget-s 5 --filter ema ma)
else
	SHAPE=(--shape 8 2048 1536 16)
	TRAIN=(--members 1 4 16 64 256 --eval-every 10 --steps 100 --budget-s 5 --member-axis vmap
		--filter ema ma)
fi

# Full float32 matmuls for the tests: they compare against float64 references at
# CPU-sized tolerances, and XLA may use TF32 on a GPU by default. No preallocation: the
# Triton check may run in a second process beside the first.
section "(a) Triton backend against the reference: tests" 120 \
	env JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_PREALLOCATE=false \
	"$PY" -P -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_selective_scan.py

if ((DRY)); then SCAN_REPEATS=(); else SCAN_REPEATS=(--repeats 5 --rounds 2); fi
section "(b) scan benchmark with floors" 100 \
	"$PY" -P "${SCAN[@]}" "${SHAPE[@]}" "${SCAN_REPEATS[@]}" --dtype float32 bfloat16 \
	--backends reference associative triton-sequential triton-parallel

# The sweep stops itself inside the section's time (compiles, then timing): its partial
# results and best options still print.
SWEEP_S=$(clamp 70)
if ((DRY)); then SWEEP_REPEATS=(); else SWEEP_REPEATS=(--repeats 10 --rounds 2); fi
section "(c) Triton forward sweep" 70 \
	"$PY" -P "${SCAN[@]}" "${SHAPE[@]}" "${SWEEP_REPEATS[@]}" --dtype float32 --sweep \
	--budget-s $((SWEEP_S > 40 ? SWEEP_S - 30 : 10))

# Ten child processes (each starts jax and compiles): the rows print as they come, so a
# timeout keeps the counts measured so far.
section "(d) trainer member scaling (EMA and MA, 1 to 256 members)" 150 \
	"$PY" -P benchmarks/train_throughput.py "${TRAIN[@]}"

{
	printf '\n## Summary\n\n'
	if ((${#FAILED[@]})); then
		printf -- '- %s\n' "${FAILED[@]}"
	else
		echo "All sections ok."
	fi
	printf '\nTotal %d s.\n' "$SECONDS"
} | tee -a "$REPORT"
echo "report: $REPORT"
