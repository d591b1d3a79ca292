# Nsight Compute per-source-line counters of the stage-3 backward: which lines of triton_scan.py stall, and which cause
# shared-memory bank conflicts. Run with the device tool from the repository root: bash benchmarks/experiments/profile_scan_source.sh
export PYTHONPATH=$PWD
timeout 300 ncu --clock-control none -k _bwd_kernel --launch-skip 1 --launch-count 1 --section SourceCounters --section WarpStateStats \
   --section MemoryWorkloadAnalysis_Tables --import-source yes -o $OUT/bwd \
   python3 benchmarks/experiments/profile_scan.py --dm 768 --hw 14 --dtype bfloat16 > $OUT/log.txt 2>&1
ncu -i $OUT/bwd.ncu-rep --page details > $OUT/bwd_details.txt 2>&1
ncu -i $OUT/bwd.ncu-rep --page source --print-source cuda,sass --csv > $OUT/bwd_cudasass.csv 2>&1
grep -A4 "bank" $OUT/bwd_details.txt | head -20
python3 benchmarks/experiments/ncu_lines.py $OUT/bwd_cudasass.csv
