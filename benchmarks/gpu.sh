#!/usr/bin/env bash
# GPU measurements recorded in the README ("Measured speed (GPU)"):
#   1. sai-attack bench at batch 64, float32 (with the torchattacks PGDL2 reference) and --amp;
#   2. agreement of the same attack run on cpu and cuda, twice on cuda, twice on cuda
#      --deterministic, on cuda and cuda --amp (benchmarks/device_agreement.py), I-FGM and SAI-FGM.
# Usage: benchmarks/gpu.sh IMAGES OUT [LIMIT [WORKERS]]
#   PYTHON=... interpreter, RUNS=DIR for step 2's runs, PAIRS="a:b ..." settings to compare.
# Every step appends to OUT as it finishes, so a run stopped early keeps what it measured.
set -u
images=$1
out=$2
limit=${3:-256}
workers=${4:-8}
py=${PYTHON:-python3}
runs=${RUNS:-$out/runs}  # the attack runs of step 2 (many files)
mkdir -p "$out"
log() { echo "=== $* $(date +%T)" | tee -a "$out/steps.txt"; }

log environment
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    nproc
} >"$out/gpu.txt" 2>&1

log bench float32
"$py" -u -m sai_attack bench "$images" --device cuda --batch-size 64 --limit "$limit" \
    --workers "$workers" --json "$out/bench-gpu.json" >"$out/bench-gpu.txt" 2>&1

log agreement
# Pairs of settings to compare; cuda-det:cuda-det2 checks that --deterministic repeats exactly.
pairs=${PAIRS:-"cpu:cuda cuda:cuda2 cuda-det:cuda-det2 cuda:cuda-amp"}
settings=$(tr ' :' '\n\n' <<<"$pairs" | awk 'NF && !seen[$0]++')
for method in ifgm sai-fgm; do
    for setting in $settings; do
        case $setting in
            cpu) flags=(--device cpu) ;;
            cuda | cuda2) flags=(--device cuda) ;;
            cuda-det | cuda-det2) flags=(--device cuda --deterministic) ;;
            cuda-amp) flags=(--device cuda --amp) ;;
            *) echo "unknown setting $setting" >&2; exit 2 ;;
        esac
        "$py" -m sai_attack -q attack "$images" --out "$runs/$method-$setting" \
            --method "$method" --limit 64 --batch-size 64 --workers "$workers" "${flags[@]}" \
            >>"$out/attack.log" 2>&1
    done
    for pair in $pairs; do
        "$py" benchmarks/device_agreement.py "$runs/$method-${pair%%:*}" \
            "$runs/$method-${pair##*:}" >>"$out/agreement.txt" 2>&1
    done
done

log bench amp
"$py" -u -m sai_attack bench "$images" --device cuda --batch-size 64 --limit "$limit" \
    --workers "$workers" --amp --no-reference --json "$out/bench-gpu-amp.json" \
    >"$out/bench-gpu-amp.txt" 2>&1
log done
