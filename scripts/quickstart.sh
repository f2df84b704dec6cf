#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the whole comparison with the quick
# preset (about 10 minutes on a 2-core CPU). Arguments go to `lmfix run`, e.g.
#   scripts/quickstart.sh --data ../shared/data/wikitext-2      (offline: a local copy)
#   scripts/quickstart.sh --preset paper --device cuda --out runs/paper
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup_env.sh"
exec "${LMFIX_VENV:-$root/.venv}/bin/lmfix" run --preset quick --out runs/quick "$@"
