#!/bin/bash
# resvmamba_train on one GPU as a user meets it: the header, the compile notice, img/s per epoch, the totals with peak
# GPU memory. For the device machine (torch, no fastai, no package index): run from the repository root with the
# pure-Python wheels in ../.whl_train/ (see tools/ddp_check.sh for how to download them); writes its log to $OUT.
# ARCH, SIZE, PER_CLASS, EPOCHS, BS choose the run (defaults: a small model so that compiling fits a short call).
set -u -o pipefail
export PYTHONUNBUFFERED=1
WHL=${WHL:-../.whl_train}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $WHL/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import torch, triton, timm, fastai; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__, 'fastai', fastai.__version__, torch.cuda.get_device_name(0))" | tee $OUT/versions.txt
python3 -c "from resvmamba.data import make_mini_food; make_mini_food('/tmp/food', n_classes=8, per_class=${PER_CLASS:-60}, size=${SIZE:-256})" || exit 1
printf 'from resvmamba.cli import resvmamba_train\nresvmamba_train()\n' > /tmp/resvmamba_train.py
python3 /tmp/resvmamba_train.py --data /tmp/food --arch ${ARCH:-resvmamba_test} --epochs ${EPOCHS:-2} --warmup 1 --bs ${BS:-64} \
    --compile auto --out /tmp/run 2>&1 | tee $OUT/train.log
cp /tmp/run/test.json /tmp/run/log.csv /tmp/run/config.json $OUT/ 2>/dev/null
