# Nsight Compute summary (speed of light, memory, warp states, occupancy) of the fused scan kernels at stages 3 and 1.
# Run with the device tool from the repository root: bash benchmarks/experiments/profile_scan.sh

nvidia-smi --query-gpu=name,driver_version --format=csv
export PYTHONPATH=$PWD
S="--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy --section LaunchStats --section SchedulerStats --section ComputeWorkloadAnalysis"
for cfg in "768 14 float32" "192 56 float32" "768 14 bfloat16"; do
  set -- $cfg
  timeout 200 ncu --clock-control none -k regex:'_(fwd|bwd)_kernel' --launch-skip 2 --launch-count 2 $S \
     python3 benchmarks/experiments/profile_scan.py --dm $1 --hw $2 --dtype $3 > $OUT/ncu_$1_$3.txt 2>&1
  grep -E "_kernel|Duration|Memory Throughput|DRAM Throughput|L1/TEX Hit|L2 Hit|Compute \(SM\) Throughput|Achieved Occupancy|Registers Per|Issue Slots Busy|No Eligible|Stall|Warp Cycles Per Issued|Mem Busy|Max Bandwidth|L1/TEX Cache Throughput|L2 Cache Throughput|Executed Ipc A|Theoretical Occ" $OUT/ncu_$1_$3.txt | head -80
done
