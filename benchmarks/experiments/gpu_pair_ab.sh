# One device call: A/B of the paired backward against the previous library, the GPU check of the new code, and a
# forward-tile sweep. bash benchmarks/experiments/gpu_pair_ab.sh (fastai's wheels in .whl_train: resvmamba imports fastcore)
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_train/*.whl
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; git log --oneline -1 2>/dev/null
echo "=== A/B $(date -u +%H:%M:%S)"
timeout 200 python3 benchmarks/experiments/pair_ab.py --json $OUT/pair_ab.json 2>&1 | tee $OUT/pair_ab.log
echo "=== check $(date -u +%H:%M:%S)"
timeout 130 python3 benchmarks/scan_bench.py --check > $OUT/check.log 2>&1; echo "check rc $?"
grep -c PASS $OUT/check.log; grep -v PASS $OUT/check.log | tail -12
echo "=== forward tiles $(date -u +%H:%M:%S)"
timeout 75 python3 benchmarks/experiments/fwd_tiles.py 2>&1 | tee $OUT/fwd_tiles.log
echo "=== done $(date -u +%H:%M:%S)"
