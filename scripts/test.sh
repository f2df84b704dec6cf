#!/usr/bin/env bash
# Set up .venv on a fresh machine and run the whole test suite (what CI runs).
# Extra arguments go to pytest, e.g. scripts/test.sh -k data -x
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh" dev
cd "$root"
exec "${LMFIX_VENV:-$root/.venv}/bin/python" -m pytest -q "$@"
