#!/bin/bash
# Memory and speed of the whole model, the library before and after a change, side by side on one machine.
# Run from the folder holding both trees (NEW and PREV, each a copy of the repository), e.g.
#   NEW=.dev_kernel PREV=.dev_kernel_prev SIZES=224/128,512/32,384/64 bash .dev_kernel/benchmarks/experiments/gpu_memory_run.sh
# PREV is the previous commit's tree (git archive HEAD), so the old kernel runs unmodified in its own process.
# SCAN=1 also times the scan alone (benchmarks/scan_ab.py, prev and new alternately, twice).
# Writes train_bench_{prev,new}.json, scan_ab.json, memory_accounting.json and the log to $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_train/*.whl || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
STEPS=${STEPS:-10}; WARM=${WARM:-3}
[ -n "${CHECK:-}" ] && (cd $NEW && PYTHONPATH=/tmp/site:. timeout 150 python3 benchmarks/scan_bench.py --check --quick)
PYTHONPATH=/tmp/site:$NEW timeout 120 python3 $NEW/benchmarks/memory_accounting.py --C 96 --size 56 --batch 4 --json $OUT/memory_accounting.json
if [ -n "${SCAN:-}" ]; then for v in ${SCAN_ORDER:-prev new prev new}; do
  [ $v = prev ] && T=$PREV || T=$NEW
  PYTHONPATH=/tmp/site:$T timeout 150 python3 $NEW/benchmarks/scan_ab.py --label $v --json $OUT/scan_ab.json
done; fi
for v in ${VERSIONS:-prev new}; do
  [ $v = prev ] && T=$PREV || T=$NEW
  PYTHONPATH=/tmp/site:$T timeout ${TB_TIMEOUT:-400} python3 $NEW/benchmarks/train_bench.py --sizes ${SIZES} --steps $STEPS \
    --warmup $WARM --tag " ($v)" --json $OUT/train_bench_$v.json --out /tmp/tb_$v.md ${EXTRA:-} $( [ $v = new ] && echo ${NEW_EXTRA:-} )
done
