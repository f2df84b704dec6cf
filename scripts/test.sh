#!/usr/bin/env bash
# Set up .venv on a fresh machine and run the whole test suite (what CI runs).
#   scripts/test.sh            everything
#   scripts/test.sh --fast     the inner loop: no torchrun, GPU-script smoke, fuzzing,
#                              multi-process signal/lock or WikiText-2 end-to-end tests
# Further arguments go to pytest, e.g. scripts/test.sh --fast -k data -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" dev
cd "$root"
fast=()
if [ "${1:-}" = "--fast" ]; then
    shift
    fast=(-m "not slow and not torchrun and not gpu_script and not fuzz and not processes")
fi
exec "${LMFIX_VENV:-$root/.venv}/bin/python" -m pytest -q "${fast[@]}" "$@"
