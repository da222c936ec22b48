"""Label-budget gap on the embedded dataset: supervised-few, supervised-all, mean-teacher FixMatch.

Plain PyTorch (no ssseg engine): it only uses ``ssseg.data.registry.build_data`` so it measures the
dataset, not the framework. One JSON line per (method, labeled, seed) is printed and appended to
``--out``; ``--summary`` prints mean +- std over seeds from that file.

    python benchmarks/embedded_gap.py --method sup --labeled 20 --seeds 0 1 2
    python benchmarks/embedded_gap.py --method sup --labeled all --seeds 0 1 2
    python benchmarks/embedded_gap.py --method fixmatch --labeled 20 --seeds 0 1 2
    python benchmarks/embedded_gap.py --summary

Metric: dataset-level mIoU on the val set (per-class intersections and unions summed over all val
images, classes with zero union excluded). FixMatch here: EMA teacher (params and buffers, eval
mode) predicts the weak unlabeled view; pixels with confidence >= tau are pseudo-labels; the student
sees a strong view (colour jitter + CutMix inside the unlabeled batch, pseudo-labels and confidences
mixed with the same boxes); loss = L_x + lambda_u * L_u (L_u averaged over all valid pixels).
The teacher's pseudo-labels are scored against the hidden ground truth of the unlabeled images at
every evaluation (``pseudo`` in the output).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_OUT = Path(__file__).with_name("embedded_gap.jsonl")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class Net(torch.nn.Module):
    def __init__(self, classes: int, encoder: str, depth: int, decoder: tuple[int, ...]):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.net = smp.Unet(encoder, encoder_weights=None, encoder_depth=depth,
                            decoder_channels=decoder, classes=classes)

    def forward(self, x):
        return self.net((x - MEAN) / STD)


def forever(loader):
    while True:
        yield from loader


def confusion(pred, target, n, ignore=255):
    keep = target != ignore
    return torch.bincount(target[keep] * n + pred[keep], minlength=n * n).view(n, n)


def miou(conf):
    inter = conf.diag().double()
    union = conf.sum(0).double() + conf.sum(1).double() - inter
    has = union > 0
    return float((inter[has] / union[has]).mean() * 100), (inter / union.clamp(min=1) * 100).tolist()


@torch.no_grad()
def evaluate(model, images, masks, n, bs=250):
    model.eval()
    conf = torch.zeros(n, n, dtype=torch.long)
    for i in range(0, len(images), bs):
        pred = model(images[i:i + bs]).argmax(1)
        conf += confusion(pred, masks[i:i + bs], n)
    return miou(conf)


@torch.no_grad()
def score_pseudo(teacher, images, masks, n, tau):
    teacher.eval()
    prob = torch.softmax(teacher(images), 1)
    c, p = prob.max(1)
    hit = p == masks
    sure = c >= tau
    return {"acc": round(float(hit.float().mean() * 100), 2),
            "miou": round(miou(confusion(p, masks, n))[0], 2),
            "confident_frac": round(float(sure.float().mean() * 100), 2),
            "acc_confident": round(float(hit[sure].float().mean() * 100) if sure.any() else 0.0, 2)}


def colour_jitter(x, g):
    """Per-sample brightness, contrast, saturation (p=0.8) and grayscale (p=0.2), on [0, 1]."""
    b = x.shape[0]

    def u(lo, hi):
        return torch.empty(b, 1, 1, 1).uniform_(lo, hi, generator=g)

    on = (torch.rand(b, 1, 1, 1, generator=g) < 0.8).float()
    gray = lambda t: (0.299 * t[:, :1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:]).expand_as(t)
    y = x * u(0.6, 1.4)
    y = (y - y.mean((1, 2, 3), keepdim=True)) * u(0.6, 1.4) + y.mean((1, 2, 3), keepdim=True)
    y = (y - gray(y)) * u(0.4, 1.6) + gray(y)
    y = on * y + (1 - on) * x
    g_on = (torch.rand(b, 1, 1, 1, generator=g) < 0.2).float()
    y = g_on * gray(y) + (1 - g_on) * y
    return y.clamp(0, 1)


def cutmix(x, label, conf, g, p=0.5):
    """Paste a random box (area 2-40 %) of the next sample in the batch into each sample (prob. p)."""
    b, _, h, w = x.shape
    x, label, conf = x.clone(), label.clone(), conf.clone()
    partner = torch.roll(torch.arange(b), 1)
    xs, ls, cs = x.clone(), label.clone(), conf.clone()
    for i in range(b):
        if float(torch.rand((), generator=g)) >= p:
            continue
        area = float(torch.empty(()).uniform_(0.02, 0.4, generator=g)) * h * w
        ratio = math.exp(float(torch.empty(()).uniform_(math.log(0.3), math.log(1 / 0.3), generator=g)))
        bh = min(h, max(1, int(round(math.sqrt(area / ratio)))))
        bw = min(w, max(1, int(round(math.sqrt(area * ratio)))))
        top = int(torch.randint(0, h - bh + 1, (), generator=g))
        left = int(torch.randint(0, w - bw + 1, (), generator=g))
        j = int(partner[i])
        x[i, :, top:top + bh, left:left + bw] = xs[j, :, top:top + bh, left:left + bw]
        label[i, top:top + bh, left:left + bw] = ls[j, top:top + bh, left:left + bw]
        conf[i, top:top + bh, left:left + bw] = cs[j, top:top + bh, left:left + bw]
    return x, label, conf


@torch.no_grad()
def ema_update(teacher, student, decay):
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s.detach(), alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        if t.dtype.is_floating_point:
            t.mul_(decay).add_(s, alpha=1 - decay)
        else:
            t.copy_(s)


def run(args, seed):
    from ssseg.data.registry import build_data
    from ssseg.recipe.schema import DataConfig

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1000)
    options = dict(json.loads(args.options)) if args.options else {}
    options.setdefault("size", args.size)
    cfg = DataConfig(dataset="embedded", split=args.labeled, crop=args.crop, flip=True,
                     batch_labeled=args.batch, batch_unlabeled=args.ubatch, options=options)
    t0 = time.perf_counter()
    data = build_data(cfg)
    t_data = time.perf_counter() - t0
    n = data.num_classes
    val_x = torch.stack([data.val[i]["image"] for i in range(len(data.val))])
    val_y = torch.stack([data.val[i]["mask"] for i in range(len(data.val))])
    dl = torch.utils.data.DataLoader
    lab = forever(dl(data.labeled, batch_size=args.batch, shuffle=True, drop_last=len(data.labeled) >= args.batch))
    semi = args.method == "fixmatch"
    if semi:
        assert data.unlabeled is not None, "fixmatch needs labeled < all"
        unl = forever(dl(data.unlabeled, batch_size=args.ubatch, shuffle=True, drop_last=True))
        k = min(args.pseudo_images, len(data.unlabeled))
        pl_x = torch.stack([data.unlabeled.images[data.unlabeled.indices[i]].float() / 255 for i in range(k)])
        pl_y = torch.stack([data.unlabeled.target(i) for i in range(k)])

    model = Net(n, args.encoder, args.depth, tuple(args.decoder))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.wd)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / args.steps) ** 0.9)
    teacher = None
    if semi:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    history, pseudo = [], []
    t_train, n_steps = 0.0, 0
    for it in range(1, args.steps + 1):
        t1 = time.perf_counter()
        model.train()
        bl = next(lab)
        xl, yl = bl["image"], bl["mask"]
        logs = {}
        if semi:
            bu = next(unl)
            xu, valid = bu["image"], bu["valid"]
            with torch.no_grad():
                prob = torch.softmax(teacher(xu), 1)
                conf, pl = prob.max(1)
                pl[~valid] = 255
                conf = conf * valid
            xs, pls, cs = cutmix(colour_jitter(xu, g), pl, conf, g)
            out = model(torch.cat([xl, xs]))
            lx = F.cross_entropy(out[: len(xl)], yl, ignore_index=255)
            lu_px = F.cross_entropy(out[len(xl):], pls, ignore_index=255, reduction="none")
            keep = (cs >= args.tau) & (pls != 255)
            lu = (lu_px * keep).sum() / (pls != 255).sum().clamp(min=1)
            loss = lx + args.lam * lu
        else:
            loss = F.cross_entropy(model(xl), yl, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if semi:
            ema_update(teacher, model, args.ema)
        t_train += time.perf_counter() - t1
        n_steps += 1
        if it % args.eval_every == 0 or it == args.steps:
            rec = {"iter": it, "student": round(evaluate(model, val_x, val_y, n)[0], 2)}
            if semi:
                rec["teacher"] = round(evaluate(teacher, val_x, val_y, n)[0], 2)
                ps = score_pseudo(teacher, pl_x, pl_y, n, args.tau)
                pseudo.append({"iter": it, **ps})
            history.append(rec)
            print(json.dumps({"seed": seed, **rec, **({"pseudo": pseudo[-1]} if semi else {})}),
                  file=sys.stderr, flush=True)
    final = evaluate(teacher if semi else model, val_x, val_y, n)
    key = "teacher" if semi else "student"
    return {
        "method": args.method, "labeled": args.labeled, "seed": seed, "steps": args.steps,
        "size": args.size, "crop": args.crop, "batch": args.batch,
        "ubatch": args.ubatch if semi else 0, "lr": args.lr, "tau": args.tau if semi else None,
        "lam": args.lam if semi else None, "ema": args.ema if semi else None,
        "model": {"arch": "Unet", "encoder": args.encoder, "encoder_depth": args.depth,
                  "decoder_channels": list(args.decoder)},
        "options": options, "tag": args.tag,
        "miou_last": round(final[0], 2), "miou_best": max(h[key] for h in history),
        "per_class_last": [round(v, 1) for v in final[1]], "eval_model": key,
        "history": history, "pseudo": pseudo,
        "step_time_s": round(t_train / n_steps, 4), "data_build_s": round(t_data, 2),
        "threads": torch.get_num_threads(), "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        "date": time.strftime("%Y-%m-%d"),
    }


def summary(path, tag=None):
    groups = defaultdict(list)
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        if tag is not None and r.get("tag") != tag:
            continue
        groups[(r.get("tag"), r["method"], r["labeled"], r["steps"])].append(r)
    print(f"{'tag':<10} {'method':<9} {'labeled':>7} {'steps':>6} {'n':>2} {'mIoU last':>14} "
          f"{'mIoU best':>14} {'step s':>7}")
    for (tg, m, lab, st), rs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        last = [r["miou_last"] for r in rs]
        best = [r["miou_best"] for r in rs]
        sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{str(tg):<10} {m:<9} {lab:>7} {st:>6} {len(rs):>2} "
              f"{statistics.mean(last):6.1f} ± {sd(last):4.1f}  {statistics.mean(best):6.1f} ± {sd(best):4.1f} "
              f"{statistics.mean(r['step_time_s'] for r in rs):7.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", choices=["sup", "fixmatch"], default="sup")
    ap.add_argument("--labeled", default="20", help='number of labeled images, or "all"')
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--crop", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--ubatch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--wd", type=float, default=1e-4)
    ap.add_argument("--tau", type=float, default=0.95)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--ema", type=float, default=0.996)
    ap.add_argument("--encoder", default="resnet18")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--decoder", type=int, nargs="+", default=[64, 32, 16])
    ap.add_argument("--pseudo-images", type=int, default=500, help="unlabeled images scored for pseudo-label accuracy")
    ap.add_argument("--options", default="", help="JSON for data.options, e.g. '{\"train\": 1000}'")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default=None, help="free label stored with the result")
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    ap.add_argument("--summary", action="store_true", help="print mean ± std from --out and exit")
    args = ap.parse_args(argv)
    if args.summary:
        return summary(args.out, args.tag)
    torch.set_num_threads(args.threads)
    for seed in args.seeds:
        res = run(args, seed)
        print(json.dumps({k: v for k, v in res.items() if k not in ("history", "pseudo")}), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
