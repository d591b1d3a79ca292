#!/bin/bash
# Memory and speed of the whole model and of the scan, the library before and after a change, side by side on one
# machine. Run from the folder holding both trees (NEW and PREV, each a copy of the repository), e.g.
#   NEW=.dev_kernel PREV=.dev_kernel_prev SIZES=224/128,512/32,384/64 bash .dev_kernel/benchmarks/experiments/gpu_memory_run.sh
# PREV is the previous commit's tree (git archive), so the old kernel runs unmodified in its own process.
# In order: what one VSS block saves for the backward (memory_accounting.py); training/inference of resvmamba_small,
# eager, prev then new, at SIZES; the scan alone (scan_ab.py) for each version in SCAN_ORDER; then NEW_EXTRA_RUN
# (train_bench.py arguments for the new tree, e.g. compiled and checkpointed runs); CHECK=1: scan_bench.py --check --quick.
# Writes train_bench_*.json, scan_ab.json, memory_accounting.json to $OUT; collect_ab.py folds them into benchmarks/.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_train/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
STEPS=${STEPS:-10}; WARM=${WARM:-3}
[ -z "${NO_ACCOUNT:-}" ] && PYTHONPATH=/tmp/site:$NEW timeout 120 python3 $NEW/benchmarks/memory_accounting.py --C 96 --size 56 --batch 4 --json $OUT/memory_accounting.json
for v in ${VERSIONS:-prev new}; do
  [ $v = prev ] && T=$PREV || T=$NEW
  PYTHONPATH=/tmp/site:$T timeout ${TB_TIMEOUT:-400} python3 $NEW/benchmarks/train_bench.py --sizes ${SIZES} --steps $STEPS \
    --warmup $WARM --tag " ($v)" --json $OUT/train_bench_$v.json --out /tmp/tb_$v.md
done
for v in ${SCAN_ORDER:-}; do
  [ $v = prev ] && T=$PREV || T=$NEW
  PYTHONPATH=/tmp/site:$T timeout ${SCAN_TIMEOUT:-150} python3 $NEW/benchmarks/scan_ab.py --label $v --json $OUT/scan_ab.json
done
[ -n "${NEW_EXTRA_RUN:-}" ] && PYTHONPATH=/tmp/site:$NEW timeout ${EXTRA_TIMEOUT:-300} python3 $NEW/benchmarks/train_bench.py \
  $NEW_EXTRA_RUN --steps $STEPS --warmup $WARM --tag " (new)" --json $OUT/train_bench_new_extra.json --out /tmp/tb_extra.md
[ -n "${CHECK:-}" ] && (cd $NEW && PYTHONPATH=/tmp/site:. timeout 150 python3 benchmarks/scan_bench.py --check --quick)
true
