"""Fold what gpu_memory_run.sh brought back into the recorded files the chapter reads.

    python benchmarks/experiments/collect_ab.py <folder with train_bench_{prev,new}*.json, scan_ab.json>

benchmarks/train_bench_ab.json (beside train_bench.json, which chapter 04 reads): {"gpu", "date", "versions", "official": {size/batch: row}, "library": {size/batch:
{"eager"|"compiled"|"grad_ckpt": row}}, "previous": {...}}; the official rows are ../shared/ANCHORS.md's (VMamba-S v0
with its CUDA scan, synthetic data, bf16 autocast), on the GPU model named in "official_gpu".
benchmarks/scan_ab.json: the run's rows with labels "previous" and "library" (the kernel the chapter ships).
"""
import json, re, sys
from pathlib import Path

# ../shared/ANCHORS.md, whole model by resolution: train img/s, inference img/s, train peak GiB
OFFICIAL = {"NVIDIA H100 80GB HBM3": {"224²/128": (148.8, 479.7, 50.1), "224²/64": (148.0, 476.0, 25.4),
                                      "384²/64": (46.6, 153.6, 71.7), "512²/32": (31.5, 98.3, 63.4)},
            "NVIDIA H200": {"224²/128": (159.5, 511.0, 50.1)}}


def kind(label):
    if "torch.compile" in label: return "compiled"
    if "grad checkpointing" in label: return "grad_ckpt"
    return "eager"


def main(folder, repo=Path(__file__).resolve().parents[2]):
    folder, out = Path(folder), None
    tb = {"library": {}, "previous": {}}
    for f in sorted(folder.glob("train_bench_*.json")):
        d = json.loads(f.read_text())
        out = out or {k: d[k] for k in ("gpu", "date", "versions")}
        for label, r in d["models"].items():
            sb = re.search(r"(\d+)²/(\d+)", label).group(0)
            who = "previous" if "(prev)" in label else "library"
            tb[who].setdefault(sb, {})[kind(label)] = dict(r, date=d["date"])
    gpu = out["gpu"]
    table = OFFICIAL.get(gpu) or OFFICIAL["NVIDIA H100 80GB HBM3"]
    out["official_gpu"] = gpu if gpu in OFFICIAL else "NVIDIA H100 80GB HBM3"
    out["official"] = {sb: dict(train_img_s=t, infer_img_s=i, peak_gib=p) for sb, (t, i, p) in table.items() if sb in tb["library"]}
    out.update(tb)
    (repo / "benchmarks/train_bench_ab.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    scan = json.loads((folder / "scan_ab.json").read_text())
    for r in scan["rows"]: r["label"] = {"prev": "previous", "new": "library"}.get(r["label"], r["label"])
    (repo / "benchmarks/scan_ab.json").write_text(json.dumps(scan, indent=1) + "\n")


if __name__ == "__main__": main(sys.argv[1])
