#!/usr/bin/env bash
# How a fixed embedding is scaled: --embedding-norm mean-unit / unit / raw, and --cosine,
# for fixed word2vec and PMI embeddings at the quick preset's size, half its training tokens
# (150k), validation/test on the first 30k tokens to keep it short. One combined report:
#   scripts/ablate_fixed_scaling.sh ../shared/data/wikitext-2 runs/ablation
set -euo pipefail
data="${1:?usage: $0 DATA_DIR [OUT_DIR]}"
out="${2:-runs/ablation}"
lmfix="${LMFIX:-lmfix}"
common=(--preset quick --data "$data" --variants word2vec,pmi --max-train-tokens 150000
        --max-eval-tokens 30000 --quiet)
"$lmfix" run "${common[@]}" --embedding-norm mean-unit --out "$out/mean-unit"
"$lmfix" run "${common[@]}" --embedding-norm unit --out "$out/unit"
"$lmfix" run "${common[@]}" --embedding-norm raw --out "$out/raw"
"$lmfix" run "${common[@]}" --cosine --out "$out/cosine"
"$lmfix" report "$out/mean-unit" "$out/unit" "$out/raw" "$out/cosine" --out "$out"
