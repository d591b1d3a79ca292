"""The library's fused scan at VMamba-S's four stages (batch 128, N = 16): forward and forward+backward median ms,
float32 and bfloat16, and the peak memory of one bfloat16 forward+backward, for whichever `resvmamba` is on
PYTHONPATH. Run it once per library version, alternately, on one machine: each version's kernels run unmodified in
their own process (two versions cannot share one process: both register the same custom operators).

    PYTHONPATH=<tree> python benchmarks/scan_ab.py --label new --json scan_ab_new.json
"""
import argparse, json, os, sys
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scan_bench import inputs, timed, floors, copy_bandwidth, sm_clock_hz, STAGES, BATCH, N, OFFICIAL_H100, OFFICIAL_H200  # noqa: E402
from resvmamba.triton_scan import cross_selective_scan_triton                          # noqa: E402


def peak_gib(ins):
    "Peak GiB allocated by one forward+backward beyond the inputs (the checkpoints, copies and partial sums)."
    ins = [t.detach().requires_grad_() for t in ins]
    torch.cuda.synchronize(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    y = cross_selective_scan_triton(*ins)
    saved = torch.cuda.memory_allocated() - base - y.numel() * y.element_size()
    torch.autograd.grad(y, ins, torch.randn_like(y))
    return (torch.cuda.max_memory_allocated() - base) / 2**30, saved / 2**30


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True); ap.add_argument("--json", required=True)
    a = ap.parse_args()
    official = OFFICIAL_H200 if "H200" in torch.cuda.get_device_name() else OFFICIAL_H100
    old = json.load(open(a.json)) if os.path.exists(a.json) else {}
    rows = old.get("rows", [])
    props = torch.cuda.get_device_properties(0)
    bw, clock = old.get("copy_Bps") or copy_bandwidth(), old.get("sm_clock_hz") or sm_clock_hz()
    exp_rate = 16 * props.multi_processor_count * clock          # exponentials per second: 16 per clock per SM
    for Dm, H in STAGES:
        for dtype in (torch.float32, torch.bfloat16):
            dname = str(dtype).replace("torch.", "")
            ins = inputs(BATCH, Dm, H, H, N, dtype)
            for backward in (False, True):
                for t in ins: t.requires_grad_(backward)
                ms = timed(cross_selective_scan_triton, backward, ins)
                row = dict(label=a.label, Dm=Dm, H=H, dtype=dname, pass_="fwd+bwd" if backward else "fwd", ms=ms,
                           official_ms=official[(Dm, dname)][1 if backward else 0])
                row["exp_floor_ms"], row["mem_floor_ms"], row["min_bytes"] = floors(BATCH, Dm, H, H, N, dtype, bw, exp_rate, backward)
                if backward and dtype == torch.bfloat16: row["peak_gib"], row["saved_gib"] = peak_gib(ins)
                rows.append(row)
                print(f"{a.label:5s} stage {Dm:4d}/{H:2d} {dname:8s} {row['pass_']:7s} {ms:7.3f} ms  official "
                      f"{row['official_ms']:6.2f} ({row['official_ms'] / ms:.2f}x)" +
                      (f"  peak {row['peak_gib']:.2f} GiB, saved {row['saved_gib']:.2f} GiB" if "peak_gib" in row else ""), flush=True)
            del ins
    import triton, subprocess, datetime
    drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True).stdout.split()[0]
    json.dump(dict(gpu=props.name, driver=drv, torch=torch.__version__, triton=triton.__version__, sms=props.multi_processor_count,
                   sm_clock_hz=clock, copy_Bps=bw, batch=BATCH, N=N,
                   date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), rows=rows),
              open(a.json, "w"), indent=1)
