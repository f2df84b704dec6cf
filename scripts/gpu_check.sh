#!/usr/bin/env bash
# Validate and measure lmfix on a CUDA machine, in about 9 minutes on one H100/H200-class GPU.
#
#   bash scripts/gpu_check.sh DATA_DIR [OUT_DIR]       # OUT_DIR defaults to runs/gpu_check
#   bash scripts/gpu_check.sh --cpu-smoke DATA_DIR OUT  # every step on the CPU at toy sizes
#                                                       # (also: GPU_CHECK_CPU=1), for CI
#
# Steps (each one's output goes to the terminal and OUT_DIR/log.txt; a failing step is
# recorded and the next one runs):
#   (a) tests   the CUDA-only tests: pytest -q tests/test_loss.py -k cuda
#   (b) bench   tokens/s of learned, learned-untied and fixed at d = 512 against the PyTorch
#               example's algorithm (its LSTM and its TransformerModel), train and eval, in
#               fp32, TF32 and bf16 (scripts/gpu_bench.py,
#               timing from scripts/bench.py) -> OUT_DIR/bench.json
#   (c) epoch   one full WikiText-2 epoch at d = 512 with `lmfix train`, in fp32, --tf32 and
#               --amp, and the Transformer in fp32 and --amp (validation on the first 20k
#               tokens) -> OUT_DIR/epoch-*/
#   (d) paper   `lmfix run --preset paper --jobs 5 --max-minutes M`: all five variants at once
#               for M minutes (default: what the 9-minute budget leaves, 0.5..3) -> OUT_DIR/paper/
#   (e) summary one block with all of it -> OUT_DIR/summary.txt, OUT_DIR/summary.json
# Exit status: 0 if no step failed (a step skipped for a missing package is not a failure).
# Without a CUDA GPU (and without --cpu-smoke) it prints one line and exits 0.
#
# No network is needed. The python used is $PYTHON, else .venv/bin/python, else python3; the
# repository root is put on PYTHONPATH (lmfix need not be installed). Packages it lacks can be
# carried as wheels in GPU_CHECK_WHEELS (default: .whl in the repository root), installed with
# pip --no-index into OUT_DIR/site. Made on a machine with network, for the GPU machine's python
# (3.12 here; gensim is the one lmfix needs that GPU images usually lack; it needs smart_open,
# which needs wrapt, and numpy and scipy; add any of those the GPU machine lacks too):
#   (.whl/ is in .gitignore)
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl gensim==4.4.0 smart_open==9.0.2
# (28 MB) and carry .whl along with the tree. Without a needed package its part is skipped with a line
# saying so (no gensim: the word2vec variant; no scipy: word2vec and PMI; no pytest: the tests).
#
# Knobs: GPU_CHECK_BUDGET_S (540: the time the steps share), GPU_CHECK_MINUTES (step d's
# --max-minutes), GPU_CHECK_EPOCH_PRECISIONS ("fp32 tf32 bf16"; "fp32" in CPU mode).
set -uo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; }
smoke=${GPU_CHECK_CPU:-0}
args=()
for a in "$@"; do
    case "$a" in
        --cpu-smoke) smoke=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "gpu_check: unknown option $a" >&2; usage >&2; exit 2 ;;
        *) args+=("$a") ;;
    esac
done
[ "${#args[@]}" -ge 1 ] && [ "${#args[@]}" -le 2 ] || { usage >&2; exit 2; }
[ "$smoke" = 0 ] || smoke=1
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="$(command -v python3 || command -v python)"; fi
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"

if [ "$smoke" = 0 ]; then
    why=$("$py" -c 'import torch; print("" if torch.cuda.is_available() else "torch sees none")' 2>/dev/null) || why="torch cannot be imported by $py"
    if [ -n "$why" ]; then
        echo "no CUDA GPU: nothing to measure ($why)"
        exit 0
    fi
fi

data="${args[0]}"
[ -f "$data/train.txt" ] || [ -f "$data/wiki.train.tokens" ] || { echo "gpu_check: $data holds no train.txt (a WikiText directory is needed)" >&2; exit 2; }
data="$(cd "$data" && pwd)"
out="${args[1]:-runs/gpu_check}"
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
: > "$out/log.txt"
: > "$out/steps.tsv"
exec > >(tee -a "$out/log.txt") 2>&1
started=$SECONDS
budget=${GPU_CHECK_BUDGET_S:-540}
# nothing written outside OUT_DIR: no bytecode (existing .pyc files are still read), matplotlib's
# and lmfix's caches under OUT_DIR, pytest's cache off
export PYTHONDONTWRITEBYTECODE=1 MPLCONFIGDIR="$out/mpl" LMFIX_CACHE="$out/cache" PYTHONUNBUFFERED=1
cd "$root"

if [ "$smoke" = 1 ]; then
    mode=cpu-smoke device=cpu dim=16
    # one thread: OpenMP threads that spin-wait make toy models crawl on a busy small machine
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    precisions="${GPU_CHECK_EPOCH_PRECISIONS:-fp32}"
else
    mode=cuda device=cuda dim=512
    precisions="${GPU_CHECK_EPOCH_PRECISIONS:-fp32 tf32 bf16}"
fi
echo "gpu_check ($mode): data $data, out $out, python $py, $(date '+%Y-%m-%d %H:%M:%S')"
[ "$smoke" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null

# ---- packages --------------------------------------------------------------------------------
missing() {
    "$py" - <<'EOF'
import importlib.util
need = ("torch", "numpy", "tqdm", "scipy", "gensim", "matplotlib", "pytest")
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
EOF
}
lacking="$(missing)"
wheels="${GPU_CHECK_WHEELS:-$root/.whl}"
if [ -n "$lacking" ]; then
    echo "missing python packages: $lacking"
    if compgen -G "$wheels/*.whl" > /dev/null; then
        echo "installing the wheels in $wheels into $out/site (no network)"
        if "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$out/site" "$wheels"/*.whl; then
            export PYTHONPATH="$PYTHONPATH:$out/site"
            lacking="$(missing)"
        else
            echo "pip could not install them"
        fi
        echo "still missing: ${lacking:-nothing}"
    else
        echo "no wheels to install them from in $wheels (see the top of this script)"
    fi
fi
has() { case " $lacking " in *" $1 "*) return 1 ;; *) return 0 ;; esac; }
for p in torch numpy tqdm; do
    has "$p" || { echo "gpu_check: $p is missing: lmfix cannot run here"; exit 1; }
done

# ---- running a step --------------------------------------------------------------------------
child=""
on_signal() {
    echo "gpu_check: interrupted; stopping the current step"
    [ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child"
    exit 130
}
trap on_signal INT TERM
failed=0
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$out/steps.tsv"; }
skip() { echo; echo "== $1: SKIPPED: $2"; record "$1" "skipped: $2" 0; }
left() { echo $(( budget - (SECONDS - started) )); }
# step NAME LIMIT_S CMD...: run CMD under a time limit (SIGTERM, then SIGKILL 30 s later)
step() {
    local name=$1 limit=$2 t0=$SECONDS rc st
    shift 2
    [ "$limit" -ge 10 ] || limit=10
    echo
    echo "== $name ($(date +%T), limit ${limit} s): ${*/#$py/python}"
    timeout -k 30 -s TERM "$limit" "$@" &
    child=$!
    wait "$child"; rc=$?
    child=""
    if [ $rc -eq 0 ]; then st=ok; elif [ $rc -eq 124 ]; then st="timed out after $limit s"; else st="failed (exit $rc)"; fi
    [ $rc -eq 0 ] || failed=1
    echo "== $name: $st in $((SECONDS - t0)) s"
    record "$name" "$st" $((SECONDS - t0))
    return $rc
}
cap() { local l; l=$(left); [ "$1" -lt "$l" ] && echo "$1" || echo "$l"; }  # min(cap, budget left)

# ---- (a) CUDA-only tests -----------------------------------------------------------------------
if has pytest; then
    step tests "$(cap 120)" "$py" -m pytest -q -p no:cacheprovider tests/test_loss.py \
        tests/test_models.py -k cuda
else
    skip tests "pytest is not installed"
fi

# ---- (b) tokens/s: fp32, TF32, bf16 against the example's algorithm --------------------------
if [ "$smoke" = 1 ]; then
    step bench 120 "$py" scripts/gpu_bench.py --data "$data" --device cpu --dims "$dim" \
        --steps 1 --windows 1 --matmul-n 256 --out "$out/bench.json"
else
    step bench "$(cap 150)" "$py" scripts/gpu_bench.py --data "$data" --device cuda --dims "$dim" \
        --steps 4 --windows 3 --out "$out/bench.json"
fi

# ---- (c) one full WikiText-2 epoch ------------------------------------------------------------
for p in $precisions; do
    case $p in fp32) flag=() ;; tf32) flag=(--tf32) ;; bf16) flag=(--amp) ;; *) skip "epoch-$p" "unknown precision"; continue ;; esac
    if [ "$smoke" = 1 ]; then
        sizes=(--emsize "$dim" --max-train-tokens 800 --max-eval-tokens 200)
        limit=120
    else
        sizes=(--emsize "$dim" --max-eval-tokens 20000)
        limit=$(cap 100)
    fi
    step "epoch-$p" "$limit" "$py" -m lmfix train --data "$data" --out "$out/epoch-$p" --force --quiet \
        --device "$device" --epochs 1 "${sizes[@]}" "${flag[@]}"
    if [ "$p" != tf32 ]; then  # the Transformer: its own defaults (AdamW), SDPA's kernels
        step "epoch-transformer-$p" "$limit" "$py" -m lmfix train --data "$data" \
            --out "$out/epoch-transformer-$p" --force --quiet --device "$device" --epochs 1 \
            --model transformer --nhead 4 "${sizes[@]}" "${flag[@]}"
    fi
done

# ---- (d) the paper comparison, shortened, all five variants at once ------------------------------
variants="learned,learned-untied,word2vec,pmi,random-orthogonal"
if ! has scipy; then
    variants="learned,learned-untied,random-orthogonal"
    echo "scipy is missing: the word2vec and PMI variants are left out of step paper"
elif ! has gensim; then
    variants="learned,learned-untied,pmi,random-orthogonal"
    echo "gensim is missing: the word2vec variant is left out of step paper (carry a wheel: see the top of this script)"
fi
has matplotlib || echo "matplotlib is missing: lmfix run's report (its plots) will fail; the summary reads the run directories"
njobs=$(( $(tr -cd , <<< "$variants" | wc -c) + 1 ))
if [ "$smoke" = 1 ]; then
    minutes=${GPU_CHECK_MINUTES:-0.5}
    step paper 240 "$py" -m lmfix run --preset paper --data "$data" --out "$out/paper" --force --quiet \
        --jobs "$njobs" --variants "$variants" --max-minutes "$minutes" --device cpu \
        --emsize "$dim" --nhid "$dim" --epochs 1 --max-eval-tokens 200
else
    # M: what the budget leaves after ~4 min for the embeddings (~2 min on the CPU at d = 512),
    # start-up and the final evaluations; the limit leaves 15 s for the summary
    read -r minutes limit < <("$py" - "$(left)" "${GPU_CHECK_MINUTES:-}" <<'EOF'
import sys
left, given = int(sys.argv[1]), sys.argv[2]
m = float(given) if given else round(min(3.0, max(0.5, (left - 240) / 60)), 1)
print(f"{m:g}", max(left - 15, int(m * 60) + 180))
EOF
)
    step paper "$limit" "$py" -m lmfix run --preset paper --data "$data" --out "$out/paper" --force --quiet \
        --jobs "$njobs" --variants "$variants" --max-minutes "$minutes"
fi

# ---- (e) summary ------------------------------------------------------------------------------
echo
"$py" scripts/gpu_summary.py "$out" --mode "$mode" --minutes "$minutes" --wall-s $((SECONDS - started)) \
    || { echo "gpu_check: the summary could not be written"; failed=1; }
exit $failed
