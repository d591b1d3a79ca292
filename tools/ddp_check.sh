#!/bin/bash
# resvmamba_train on 2 GPUs under `accelerate launch`: killed mid-epoch (launcher and workers), resumed with --resume;
# both logs are checked for the DDP/accelerate warnings a clean run must not print. Made for the device machine
# (2 GPUs, torch but no fastai, no package index): run from the repository root after putting the pure-Python wheels
# in .whl_train/ (listed in .git/info/exclude), e.g.
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
#       -d .whl_train fastai==2.8.7 fastcore==1.14.5 fasttransform==0.0.2 fastprogress==1.0.3 fastdownload==0.0.8 plum-dispatch==2.10.1 beartype==0.23.1
# and writes its logs and the run's files to $OUT.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_train/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton, accelerate, timm, torchvision, fastai; print('torch', torch.__version__, 'triton', triton.__version__, 'accelerate', accelerate.__version__, 'timm', timm.__version__, 'torchvision', torchvision.__version__, 'fastai', fastai.__version__, 'gpus', torch.cuda.device_count(), torch.cuda.get_device_name(0))"
printf 'from resvmamba.cli import resvmamba_train\nresvmamba_train()\n' > /tmp/resvmamba_train.py
t0=$(date +%s)
python3 -c "from resvmamba.data import make_mini_food; make_mini_food('/tmp/food', n_classes=8, per_class=300, size=256)" || exit 1
echo "data: $(( $(date +%s) - t0 )) s"
L="accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no /tmp/resvmamba_train.py --data /tmp/food --arch resvmamba_small --bs 64 --epochs 3 --warmup 1 --workers 6 --out /tmp/run"
t0=$(date +%s)
$L > $OUT/run1.log 2>&1 &
pid=$!
while [ ! -f /tmp/run/ckpt/last.pth ] && kill -0 $pid 2>/dev/null; do sleep 0.5; done
echo "first checkpoint after $(( $(date +%s) - t0 )) s"
sleep 3
python3 -c "import psutil, sys; p = psutil.Process(int(sys.argv[1])); ps = [p, *p.children(recursive=True)]; [q.kill() for q in ps]; psutil.wait_procs(ps, timeout=30)" $pid; wait $pid 2>/dev/null
echo "killed the launcher and its workers after $(( $(date +%s) - t0 )) s"; cp /tmp/run/log.csv $OUT/log_at_kill.csv
t0=$(date +%s)
$L --resume > $OUT/run2.log 2>&1; echo "resume exit code $? after $(( $(date +%s) - t0 )) s"
for w in "Grad strides" destroy_process_group "barrier()" num_machines dynamo_backend FutureWarning Traceback "Warning"; do
  echo "'$w': run1 $(grep -c "$w" $OUT/run1.log), run2 $(grep -c "$w" $OUT/run2.log)"; done
echo "--- run2.log"; cat $OUT/run2.log; echo "--- log.csv"; cat /tmp/run/log.csv
cp /tmp/run/test.json /tmp/run/config.json /tmp/run/curves.png /tmp/run/confusion.png $OUT/
