# One device call: eager vs torch.compile training of resvmamba_small; Nsight Compute of the stage-1 bfloat16 forward and
# backward kernels (full set, per-line stalls); the GPU test of the training loop. bash benchmarks/experiments/gpu_compile_profile.sh
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl_train/*.whl
export PYTHONPATH=/tmp/site:$PWD   # resvmamba imports fastcore
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv; which ncu; ncu --version | tail -1
python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)"
echo "=== train_bench eager + compiled $(date -u +%H:%M:%S)"
timeout 290 python3 benchmarks/train_bench.py --compiled --steps 10 --warmup 4 --json $OUT/train_bench.json --out $OUT/train_bench.md 2>&1 | grep -v "^  warnings.warn\|UserWarning"
echo "=== ncu $(date -u +%H:%M:%S)"
for k in fwd bwd; do
  timeout 100 ncu --clock-control none -k regex:_${k}_kernel --launch-skip 1 --launch-count 1 --set full --import-source yes -o /tmp/s1_$k \
    python3 benchmarks/experiments/profile_scan.py --dm 192 --hw 56 --dtype bfloat16 > /tmp/ncu_$k.log 2>&1; tail -3 /tmp/ncu_$k.log
  ncu -i /tmp/s1_$k.ncu-rep --page details > $OUT/ncu_s1_bf16_${k}_details.txt 2>&1
  ncu -i /tmp/s1_$k.ncu-rep --page raw --csv 2>/dev/null | python3 -c "import csv,sys; r=list(csv.reader(sys.stdin)); [print(h, '=', v) for h, v in zip(r[0], r[-1]) if 'stall' in h or 'occupancy' in h or 'registers' in h or 'throughput' in h or 'issue' in h]" > $OUT/ncu_s1_bf16_${k}_raw.txt 2>&1
  ncu -i /tmp/s1_$k.ncu-rep --page source --print-source cuda,sass --csv > /tmp/s1_${k}_src.csv 2>&1
  python3 benchmarks/experiments/ncu_lines.py /tmp/s1_${k}_src.csv > $OUT/ncu_s1_bf16_${k}_lines.txt 2>&1; head -8 $OUT/ncu_s1_bf16_${k}_lines.txt
  grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occ|Issue Slots Busy|No Eligible|Memory Throughput|DRAM Throughput|L1/TEX Hit|Warp Cycles Per Issued|Executed Ipc A|Compute \(SM\)" $OUT/ncu_s1_bf16_${k}_details.txt
done
echo "=== learner GPU test $(date -u +%H:%M:%S)"
[ "$LEARNER" = 0 ] || timeout 110 python3 -m pytest -q -p no:cacheprovider tests/test_learner.py -k gpu_run_resumes 2>&1 | tail -5
echo "=== done $(date -u +%H:%M:%S)"
