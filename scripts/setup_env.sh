#!/usr/bin/env bash
# Create .venv (if missing) and install lmfix into it, with the dev extra when asked.
# Sourced by test.sh and quickstart.sh. torch==2.13.0 is installed first when no torch is
# present: the project's own requirement is a range, and an open range on a fresh machine can
# pull a multi-GB CUDA build. Set LMFIX_TORCH to choose another torch (e.g. a CUDA build).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${LMFIX_VENV:-$root/.venv}"
extra="${1:-}"
if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv" >&2
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "installing ${LMFIX_TORCH:-torch==2.13.0}" >&2
    # unquoted on purpose: LMFIX_TORCH may carry pip options (--index-url ...)
    # shellcheck disable=SC2086
    "$py" -m pip install -q ${LMFIX_TORCH:-torch==2.13.0}
fi
spec="$root"
[ -n "$extra" ] && spec="$root[$extra]"
"$py" -m pip install -q -e "$spec"
