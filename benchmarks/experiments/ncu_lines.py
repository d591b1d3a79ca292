"""Summarise `ncu --page source --print-source cuda,sass --csv` output: stall samples and shared-memory wavefronts per
source line, and the SASS opcodes behind the top lines.   python ncu_lines.py bwd_cudasass.csv"""
import csv, collections, sys

rows = list(csv.reader(open(sys.argv[1])))
cur = hdr = line = None
agg, ops, src = collections.defaultdict(collections.Counter), collections.defaultdict(collections.Counter), {}
num = lambda r, k: float(r[ix[k]].replace(",", "")) if r[ix[k]] not in ("", "-") else 0.0
for r in rows:
    if r and r[0] == "File Path": cur = r[1].split("/")[-1]; continue
    if r and r[0] == "Line No": hdr = r; ix = {h: i for i, h in enumerate(hdr)}; continue
    if hdr is None or len(r) != len(hdr): continue
    if r[0]:                                   # a source line (its counters summed over its instructions)
        line = (cur, int(r[0])); src[line] = r[1].strip()
        for k in ("Warp Stall Sampling (All Samples)", "L1 Wavefronts Shared", "L1 Wavefronts Shared Excessive",
                  "L2 Theoretical Sectors Global Excessive"):
            agg[line][k] += num(r, k)
        continue
    s = r[3].split()                           # an instruction of that line
    if s and s[0] != "...":
        op = (s[1] if s[0].startswith("@") else s[0]).split(".")[0]
        ops[line][op] += num(r, "Instructions Executed")
total = sum(v["Warp Stall Sampling (All Samples)"] for v in agg.values())
for key, v in sorted(agg.items(), key=lambda kv: -kv[1]["Warp Stall Sampling (All Samples)"])[:15]:
    top = ", ".join(f"{k} {c:.2g}" for k, c in ops[key].most_common(3))
    print(f"{key[0][:16]:16s}:{key[1]:4d} stalls {100 * v['Warp Stall Sampling (All Samples)'] / total:5.1f}% "
          f"shared wavefronts {v['L1 Wavefronts Shared']:.2g} (excess {v['L1 Wavefronts Shared Excessive']:.2g}) "
          f"| {top} | {src[key][:70]}")
