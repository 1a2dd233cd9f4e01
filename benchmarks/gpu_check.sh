#!/usr/bin/env bash
# The GPU check on the day: on a fresh machine with one CUDA GPU, from anywhere,
#
#     bash benchmarks/gpu_check.sh            # any arguments go to gpu_check.py
#
# `make setup` sees nvidia-smi and installs the CUDA torch + faiss-gpu (and the demo data);
# then benchmarks/gpu_check.py runs every GPU check in < 8 min and writes
# benchmarks/results/gpu_check_gpu.{json,md} (commit those). See gpu_check.py's docstring.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v nvidia-smi >/dev/null 2>&1 || echo "!! no nvidia-smi: make setup installs the CPU torch"
if ! make setup; then
  # a setup that fails half-way (e.g. no network) must not cost the check: use what is there
  echo "!! make setup failed; running with the existing .venv" >&2
fi
if [ ! -x .venv/bin/python ]; then
  echo "!! .venv/bin/python missing: make setup did not create the venv" >&2
  exit 2
fi
exec .venv/bin/python benchmarks/gpu_check.py "$@"
