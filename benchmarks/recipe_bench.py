"""The 'light' and 'paper' recipes on a small set of real low-resolution images, against a small conv net.

Data: scikit-learn's bundled `load_digits` (1,797 real 8x8 handwritten digits, no download), written as grey
PNGs in CNFOOD-241's layout: 30 % of each class in val600x600/ (the test set), the rest in train600x600/,
split 8:2 into training and validation by `split="random"` (split seed 0 for every run: all runs see the same
images).
Arms, each for --seeds training seeds, all at --size px:
  light  food_learner(arch="resvmamba_test", recipe="light") + fit_paper(--epochs)
  paper  food_learner(arch="resvmamba_test", recipe="paper") + fit_paper(--epochs)  (the paper's recipe)
  conv   fastai vision_learner(resnet18, pretrained=False) with its defaults (fit_one_cycle, lr 1e-3) on the
         same DataLoaders as light, for as many epochs as fit into light's training wall time of the same seed
Test top-1 on the held-out test set (EMA weights for the resvmamba arms, as food_learner validates).
Each seed runs in its own process (all three at once on one GPU); the JSON is rewritten after every arm.

Usage: python benchmarks/recipe_bench.py --json recipe_bench.json [--epochs 30] [--seeds 0,1,2] [--tiny]
"""

import argparse
import datetime
import json
import os
import platform
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch


def write_digits(root: Path, test_pct: float = 0.3, seed: int = 0, limit: int | None = None) -> Path:
    "The 1,797 digits as 8x8 grey PNGs: val600x600/ (test) and train600x600/, class folders 000..009."
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(d.target == c))[:limit]
        n_test = round(test_pct * len(idx))
        for j, i in enumerate(idx):
            folder = root / ("val600x600" if j < n_test else "train600x600") / f"{c:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(d.images[i] * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
    (root / "classes.txt").write_text("\n".join(str(c) for c in range(10)) + "\n")
    return root


def _quiet(learn):
    from fastai.callback.progress import ProgressCallback
    from fastcore.basics import noop

    learn.remove_cb(ProgressCallback)
    learn.logger = noop
    return learn


def _food(root, recipe, args, seed):
    from fastai.torch_core import set_seed

    from resvmamba.learner import food_learner

    set_seed(seed)
    learn = _quiet(
        food_learner(
            root,
            arch="resvmamba_test",
            size=args.size,
            split="random",
            valid_pct=0.2,
            recipe=recipe,
            num_workers=args.workers,
            compile=False,
        )
    )
    return learn


def run_resvmamba(root, recipe, args, seed) -> dict:
    from resvmamba.data import food_test_dl

    learn = _food(root, recipe, args, seed)
    t0 = time.perf_counter()
    learn.fit_paper(args.epochs)
    fit_s = time.perf_counter() - t0
    val = learn.recorder.values[-1]  # before `validate`, which replaces the recorder's values
    loss, top1, top5 = learn.validate(dl=food_test_dl(learn.dls))
    return dict(
        test_top1=float(top1),
        test_top5=float(top5),
        valid_top1=float(val[2]),
        fit_s=round(fit_s, 1),
        epochs=args.epochs,
        bs=learn.dls.train.bs,
        lr=learn.fit_args["lr"],
        warmup=learn.fit_args["warmup"],
        recipe=learn.recipe,
        reason=learn.recipe_reason,
        throughput=learn.throughput_totals,
        n_train=len(learn.dls.train_ds),
        n_valid=len(learn.dls.valid_ds),
    )


def run_conv(root, args, seed, budget_s) -> dict:
    """resnet18 from scratch with fastai's vision_learner defaults on light's DataLoaders, for `budget_s` of
    training."""
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.learner import vision_learner
    from torchvision.models import resnet18

    from resvmamba.data import food_test_dl

    def make():
        set_seed(seed)
        dls = _food(root, "light", args, seed).dls
        return _quiet(vision_learner(dls, resnet18, pretrained=False, metrics=accuracy))

    probe = make()  # one epoch to learn how long an epoch takes (thrown away)
    t0 = time.perf_counter()
    probe.fit_one_cycle(1)
    epoch_s = time.perf_counter() - t0
    n_epochs = int(max(1, min(500, round(budget_s / epoch_s))))
    learn = make()
    t0 = time.perf_counter()
    learn.fit_one_cycle(n_epochs)
    fit_s = time.perf_counter() - t0
    valid_top1 = float(learn.recorder.values[-1][2])
    loss, acc = learn.validate(dl=food_test_dl(learn.dls))
    return dict(
        test_top1=float(acc),
        valid_top1=valid_top1,
        fit_s=round(fit_s, 1),
        epochs=n_epochs,
        epoch_s=round(epoch_s, 2),
        budget_s=round(budget_s, 1),
        bs=learn.dls.train.bs,
        lr=1e-3,
    )


def one_seed(seed, root, args, out_json):
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // max(1, len(args.seeds))))
    res = {}

    def save():
        Path(f"{out_json}.seed{seed}").write_text(json.dumps(res, indent=1))

    for arm in args.arms:
        t0 = time.perf_counter()
        try:
            if arm == "conv":
                res[arm] = run_conv(root, args, seed, res.get("light", {}).get("fit_s", 30.0))
            else:
                res[arm] = run_resvmamba(root, arm, args, seed)
        except Exception as e:
            res[arm] = dict(error=f"{type(e).__name__}: {e}")
        print(
            f"seed {seed} {arm}: {res[arm].get('test_top1', res[arm].get('error'))} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        save()
    return res


def summary(results: dict, arms) -> dict:
    out = {}
    for arm in arms:
        acc = [r[arm]["test_top1"] for r in results.values() if "test_top1" in r.get(arm, {})]
        fit = [r[arm]["fit_s"] for r in results.values() if "fit_s" in r.get(arm, {})]
        if acc:
            out[arm] = dict(
                test_top1_mean=float(np.mean(acc)),
                test_top1_sd=float(np.std(acc, ddof=1)) if len(acc) > 1 else None,
                n=len(acc),
                fit_s_mean=float(np.mean(fit)),
            )
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default="/tmp/digits_food")
    p.add_argument("--json", default="recipe_bench.json")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="light,paper,conv")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="CPU smoke test")
    args = p.parse_args()
    args.seeds, args.arms = [int(s) for s in args.seeds.split(",")], args.arms.split(",")
    root = Path(args.root)
    if not (root / "train600x600").is_dir():
        write_digits(root, limit=40 if args.tiny else None)
    import fastai
    import timm

    from resvmamba.data import choose_recipe, food_split, typical_size

    sets = food_split(root, "random", valid_pct=0.2)
    info = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        gpu=torch.cuda.get_device_name(0)
        if torch.cuda.is_available()
        else f"CPU ({platform.processor() or 'x86-64'})",
        versions=dict(
            torch=torch.__version__,
            fastai=fastai.__version__,
            timm=timm.__version__,
            python=platform.python_version(),
        ),
        data=dict(
            train=len(sets["train"]),
            valid=len(sets["val"]),
            test=len(sets["test"]),
            choice=choose_recipe(len(sets["train"]), typical_size([f for f, _ in sets["train"]])),
        ),
        args=dict(epochs=args.epochs, size=args.size, seeds=args.seeds, arms=args.arms, workers=args.workers),
    )
    print(json.dumps(info), flush=True)
    t0 = time.perf_counter()
    if len(args.seeds) == 1:
        results = {args.seeds[0]: one_seed(args.seeds[0], root, args, args.json)}
    else:
        with get_context("spawn").Pool(len(args.seeds)) as pool:
            results = dict(
                zip(args.seeds, pool.starmap(one_seed, [(s, root, args, args.json) for s in args.seeds]))
            )
    info |= dict(wall_s=round(time.perf_counter() - t0, 1), summary=summary(results, args.arms), runs=results)
    Path(args.json).write_text(json.dumps(info, indent=1))
    for arm, s in info["summary"].items():
        sd = f" ± {s['test_top1_sd']:.3f}" if s["test_top1_sd"] is not None else ""
        print(f"{arm:6s} test top-1 {s['test_top1_mean']:.3f}{sd} (n={s['n']}, fit {s['fit_s_mean']:.0f} s)")


if __name__ == "__main__":
    main()
