#!/bin/bash
# The compiled model in the full training loop, on the device machine (torch, triton, timm, accelerate; no fastai:
# carry its pure-Python wheels in .whl_train/, see tools/ddp_check.sh). From the repository root; logs go to $OUT.
#  1. the GPU tests of tests/test_learner.py (a tiny model compiled: one graph, resume, EMA weights in an eager model);
#  2. resvmamba_train --arch resvmamba_small on generated 256-px JPEGs, --compile auto: killed after its first
#     checkpoint, resumed with --resume; then the same run with --compile no (tools/compile_cli.py adds
#     a clock: compile time, steady images/s, peak memory);
#  3. with 2 GPUs, the compiled run under `accelerate launch`, killed and resumed.
# Step 3 runs only while the command has time left (BUDGET seconds in all, default 560); STEPS picks steps
# (default "tests compiled eager ddp"). What compiling the validation model would buy was a fourth step, never run to
# the end; its script: git show 11df5a5:benchmarks/experiments/compile_val.py (benchmarks/RESULTS.md, 2026-12-01).
set -u
BUDGET=${BUDGET:-560}; STEPS=${STEPS:-"tests compiled eager ddp"}; T0=$(date +%s); left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_train/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton, accelerate, timm, fastai, subprocess; print('torch', torch.__version__, 'triton', triton.__version__, 'accelerate', accelerate.__version__, 'timm', timm.__version__, 'fastai', fastai.__version__, 'gpus', torch.cuda.device_count()); print(subprocess.run(['nvidia-smi', '--query-gpu=name,driver_version', '--format=csv,noheader'], capture_output=True, text=True).stdout)" | tee $OUT/versions.txt
NGPU=$(python3 -c "import torch; print(torch.cuda.device_count())")
C="python3 tools/compile_cli.py"
python3 tools/compile_cli.py --make-data /tmp/food | tee $OUT/data.txt

step() { [[ " $STEPS " == *" $1 "* ]]; }
if step tests; then
echo "=== 1. GPU tests ($(left) s left)"
t=$(date +%s)
timeout 240 python3 -m pytest tests/test_learner.py -m cuda -q -s -p no:cacheprovider > $OUT/pytest.log 2>&1; echo "pytest exit $? after $(( $(date +%s) - t )) s"
tail -5 $OUT/pytest.log; grep "max |diff|" $OUT/pytest.log
fi

kill_and_resume() {  # $1: label, rest: the command; kill after the first checkpoint, then --resume
  local label=$1; shift
  rm -rf /tmp/$label  # a machine kept warm between calls still holds the last call's run
  local t=$(date +%s)
  "$@" > $OUT/${label}_run1.log 2>&1 &
  local pid=$!
  while [ ! -f /tmp/$label/ckpt/last.pth ] && kill -0 $pid 2>/dev/null; do sleep 0.5; done
  echo "$label: first checkpoint after $(( $(date +%s) - t )) s"; sleep 2
  python3 -c "import psutil, sys; p = psutil.Process(int(sys.argv[1])); ps = [p, *p.children(recursive=True)]; [q.kill() for q in ps]; psutil.wait_procs(ps, timeout=30)" $pid; wait $pid 2>/dev/null
  echo "$label: killed after $(( $(date +%s) - t )) s"; cp /tmp/$label/log.csv $OUT/${label}_log_at_kill.csv
  t=$(date +%s)
  "$@" --resume > $OUT/${label}_run2.log 2>&1; echo "$label: resume exit code $? after $(( $(date +%s) - t )) s"
  grep -h "clock\|resuming\|test top\|error\|Error" $OUT/${label}_run1.log $OUT/${label}_run2.log | grep -v "^ "
  echo "'Traceback'/'Warning' in the logs: $(cat $OUT/${label}_run*.log | grep -c 'Traceback\|Warning')"
  cp /tmp/$label/log.csv $OUT/${label}_log.csv; cp /tmp/$label/config.json $OUT/${label}_config.json
}
A="--data /tmp/food --arch resvmamba_small --bs 128 --epochs 3 --warmup 1 --workers 12"
if step compiled; then
  echo "=== 2. one GPU, compile auto ($(left) s left)"
  kill_and_resume compiled $C $A --out /tmp/compiled
fi
if step eager; then
  echo "=== 2b. one GPU, compile no ($(left) s left)"
  t=$(date +%s); $C $A --compile no --out /tmp/eager > $OUT/eager.log 2>&1; echo "eager exit $? after $(( $(date +%s) - t )) s"
  grep -h "clock\|test top" $OUT/eager.log
fi

if step ddp && [ "$NGPU" -ge 2 ] && [ $(left) -gt 130 ]; then
  echo "=== 3. two GPUs under accelerate, compile auto ($(left) s left)"
  kill_and_resume ddp accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
    tools/compile_cli.py $A --out /tmp/ddp
  for w in "Grad strides" destroy_process_group "barrier()" FutureWarning; do echo "'$w': $(cat $OUT/ddp_run*.log | grep -c "$w")"; done
fi
echo "done after $(( $(date +%s) - T0 )) s"
