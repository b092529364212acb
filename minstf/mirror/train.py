"""Train STF with the PyTorch mirror: upstream's rate-distortion recipe, resumable, on CPU.

    python -m minstf.mirror.train --out runs/base --config small --lmbda 0.0067 --minutes 60 --lr-drop 0.1
    python -m minstf.mirror.train --out runs/base --resume --minutes 60 --lr-drop 0.1   # after an interruption
    python -m minstf.mirror.train --out runs/lo --init runs/base/checkpoint.pt --lmbda 0.0035 --steps 3000
    python -m minstf.mirror.train --out runs/q2 --init weights/stf-small-q2.safetensors --lmbda 0.013 --minutes 45
    python -m minstf.mirror.train export runs/base/checkpoint.pt runs/base/params.npz

On a shared machine, run it with OMP_WAIT_POLICY=PASSIVE (torch's idle threads sleep).

Loss (upstream RateDistortionLoss): `lmbda * 255**2 * MSE + bpp`, where bpp is the sum of
-log2 of the y and z likelihoods divided by the number of pixels. Adam on every parameter
except the entropy bottleneck's `quantiles`, which a second Adam fits with the aux loss;
gradient-norm clipping at 1.0. Defaults are tuned for the small model on two CPU cores
(upstream's values are in the option help). Data: random crops with random horizontal and
vertical flips from a folder of images (decoded once and kept in RAM), `--crops-per-image`
crops of every image per epoch. Never point it at Kodak: that set is for evaluation only.

Outputs in --out: `checkpoint.pt` (model, optimizers, step, RNG and data-order state;
written atomically every --save-every steps and at the end) and `log.tsv` (step, loss,
bpp, mse, psnr, aux, lr, seconds; training-mode values averaged over --log-every steps,
plus eval-mode (rounded) bpp/psnr on a fixed held-out batch when --val-every fires).
"""
import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..config import STFConfig
from .configs import CONFIGS
from .stf_torch import STFTorch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "train"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp"}


# --------------------------------------------------------------------------- data

def held_out(count, holdout, seed):
    """The indexes (into load_images' sorted list) of the images kept out of training for validation."""
    rng = np.random.default_rng(seed)
    return set(rng.choice(count, size=min(holdout, count - 1), replace=False).tolist())


def load_images(folder, min_size):
    """Decode every image under `folder` (recursively, sorted) to uint8 (H, W, 3) arrays."""
    folder = Path(folder).resolve()
    if "kodak" in (p.lower() for p in folder.parts):
        raise SystemExit(f"refusing to train on {folder}: Kodak is for evaluation only")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    images, skipped = [], 0
    for p in paths:
        with Image.open(p) as im:
            a = np.asarray(im.convert("RGB"))
        if min(a.shape[:2]) < min_size:
            skipped += 1
            continue
        images.append(a)
    if not images:
        raise SystemExit(f"no images of at least {min_size}x{min_size} under {folder}")
    mp = sum(a.shape[0] * a.shape[1] for a in images) / 1e6
    print(f"loaded {len(images)} images ({mp:.0f} MP) from {folder}; skipped {skipped} smaller than {min_size}",
          flush=True)
    return images


class CropSampler:
    """Epochs of `crops_per_image` random crops per image, shuffled; flips at random.

    The whole state (generator, epoch order, position) goes into the checkpoint.
    """

    def __init__(self, images, patch, crops_per_image, seed):
        self.images, self.patch, self.cpi = images, patch, crops_per_image
        self.rng = np.random.default_rng(seed)
        self.order, self.pos = np.zeros(0, dtype=np.int64), 0

    def crop(self, a):
        p, rng = self.patch, self.rng
        i, j = rng.integers(0, a.shape[0] - p + 1), rng.integers(0, a.shape[1] - p + 1)
        c = a[i:i + p, j:j + p]
        if rng.random() < 0.5:
            c = c[:, ::-1]
        if rng.random() < 0.5:
            c = c[::-1]
        return c

    def batch(self, n):
        out = []
        for _ in range(n):
            if self.pos >= len(self.order):
                self.order = self.rng.permutation(np.repeat(np.arange(len(self.images)), self.cpi))
                self.pos = 0
            out.append(self.crop(self.images[self.order[self.pos]]))
            self.pos += 1
        x = np.stack(out).transpose(0, 3, 1, 2)  # (B, 3, p, p) uint8
        return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)

    def state_dict(self):
        return {"rng": self.rng.bit_generator.state, "order": self.order.tolist(), "pos": self.pos}

    def load_state_dict(self, s):
        self.rng.bit_generator.state = s["rng"]
        self.order, self.pos = np.asarray(s["order"], dtype=np.int64), int(s["pos"])


# --------------------------------------------------------------------------- loss and steps

def rate_distortion(out, x, lmbda):
    """Upstream RateDistortionLoss: returns loss, bpp, mse (tensors)."""
    num_pixels = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log(lik).sum() for lik in out["likelihoods"].values()) / (-math.log(2) * num_pixels)
    mse = F.mse_loss(out["x_hat"], x)
    return lmbda * 255 ** 2 * mse + bpp, bpp, mse


def psnr(mse):
    return -10 * math.log10(max(mse, 1e-12))


def train_step(model, optimizer, aux_optimizer, x, lmbda, clip=1.0):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    aux_optimizer.zero_grad(set_to_none=True)
    loss, bpp, mse = rate_distortion(model(x), x, lmbda)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()
    aux = model.aux_loss()
    aux.backward()
    aux_optimizer.step()
    return {"loss": loss.item(), "bpp": bpp.item(), "mse": mse.item(), "aux": aux.item()}


@torch.no_grad()
def evaluate(model, x):
    """Eval-mode (rounded) entropy-estimate bpp and PSNR of the clamped reconstruction."""
    model.eval()
    out = model(x)
    bpp = sum(-torch.log2(lik).sum() for lik in out["likelihoods"].values()).item() / (
        x.shape[0] * x.shape[2] * x.shape[3])
    mse = F.mse_loss(out["x_hat"].clamp(0, 1), x).item()
    return bpp, psnr(mse)


def progress(step, seconds, args):
    """Fraction of the run done: by wall-clock time under --minutes, else by steps."""
    return seconds / (60 * args.minutes) if args.minutes else step / args.steps


def lr_at(fraction, args):
    """Constant, then x0.1 for the last `--lr-drop` fraction of the run (0 disables)."""
    return args.lr * (0.1 if args.lr_drop and fraction >= 1 - args.lr_drop else 1.0)


# --------------------------------------------------------------------------- checkpoints

def save_checkpoint(path, **state):
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only


def model_from_checkpoint(path):
    ck = load_checkpoint(path)
    model = STFTorch(STFConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    return model, ck


def init_model(model, path, config_name="small"):
    """Load --init weights into `model`: a training checkpoint (.pt) or a minstf weight file
    (.safetensors, e.g. a shipped weights/stf-small-q2.safetensors: every parameter is in it;
    its CDF tables are not needed, the mirror recomputes likelihoods from the parameters)."""
    if str(path).endswith(".safetensors"):
        from ..weights import load_weights  # numpy only; the checked reader, fingerprint verified
        w = load_weights(path)
        if w.config != model.config:
            raise SystemExit(f"--init {path} has config {w.config.to_dict()}, not --config {config_name}")
        model.load_params(w.params)
        return model
    init = load_checkpoint(path)
    if STFConfig.from_dict(init["config"]) != model.config:
        raise SystemExit(f"--init checkpoint has config {init['config']}, not --config {config_name}")
    model.load_state_dict(init["model"])
    return model


def export_params(checkpoint_path):
    """The trained parameters as {key: float32 numpy array} (state_dict_spec order) and the config."""
    model, ck = model_from_checkpoint(checkpoint_path)
    return model.export_params(), model.config


def export_main(argv):
    p = argparse.ArgumentParser(prog="python -m minstf.mirror.train export",
                                description="Write a checkpoint's parameters as a float32 .npz "
                                            "(config JSON in the array '__config__').")
    p.add_argument("checkpoint")
    p.add_argument("out_npz")
    a = p.parse_args(argv)
    params, config = export_params(a.checkpoint)
    np.savez(a.out_npz, __config__=np.array(json.dumps(config.to_dict())), **params)
    n = sum(v.size for v in params.values())
    print(f"wrote {len(params)} arrays, {n:,} parameters ({4 * n / 1e6:.2f} MB float32) to {a.out_npz}")


# --------------------------------------------------------------------------- main

# recipe options that --resume takes from the checkpoint unless given again
RESUMED_OPTIONS = ("config", "data", "steps", "minutes", "batch_size", "patch_size", "crops_per_image", "lr",
                   "lr_drop", "aux_lr", "lmbda", "clip", "drop_path", "seed", "holdout")


def parse_args(argv, defaults=None):
    p = argparse.ArgumentParser(prog="python -m minstf.mirror.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, log.tsv)")
    p.add_argument("--config", choices=sorted(CONFIGS), default="small")
    p.add_argument("--data", default=str(DEFAULT_DATA), help="folder of training images (never Kodak)")
    p.add_argument("--steps", type=int, default=0, help="total number of steps, resumes included (0 = no limit)")
    p.add_argument("--minutes", type=float, default=0.0,
                   help="wall-clock budget of the whole run (resumes included); stops at --steps or this, "
                        "whichever comes first, and --lr-drop then counts in time")
    p.add_argument("--batch-size", type=int, default=4, help="upstream: 16 (GPU)")
    p.add_argument("--patch-size", type=int, default=256, help="upstream: 256")
    p.add_argument("--crops-per-image", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4, help="upstream: 1e-4 (for a much longer run)")
    p.add_argument("--lr-drop", type=float, default=0.0, help="final fraction of the run at lr/10")
    p.add_argument("--aux-lr", type=float, default=1e-2,
                   help="upstream: 1e-3; higher so the quantiles (z medians) keep up in a short run")
    p.add_argument("--lmbda", type=float, default=0.0067)
    p.add_argument("--clip", type=float, default=1.0, help="max gradient norm (0 = off)")
    p.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth rate (upstream 0.2)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--val-every", type=int, default=500, help="eval-mode bpp/psnr on held-out crops (0 = off)")
    p.add_argument("--holdout", type=int, default=8, help="images kept out of training for --val-every")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    group.add_argument("--init", metavar="WEIGHTS",
                       help="start from these weights (new optimizers, step 0): a checkpoint.pt or a minstf "
                            ".safetensors weight file such as weights/stf-small-q2.safetensors")
    if defaults:
        p.set_defaults(**defaults)
    return p.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["export"]:
        return export_main(argv[1:])
    args = parse_args(argv)
    if args.resume and (Path(args.out) / "checkpoint.pt").exists():  # the run's own recipe, unless overridden
        saved = load_checkpoint(Path(args.out) / "checkpoint.pt").get("args", {})
        args = parse_args(argv, {k: v for k, v in saved.items() if k in RESUMED_OPTIONS})
    if not args.steps and not args.minutes:
        raise SystemExit("give --steps, --minutes or both")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ck_path, log_path = out / "checkpoint.pt", out / "log.tsv"

    ck = load_checkpoint(ck_path) if args.resume else None
    config = STFConfig.from_dict(ck["config"]) if ck else CONFIGS[args.config]
    torch.manual_seed(args.seed)
    model = STFTorch(config, drop_path_rate=args.drop_path)
    if args.init:
        init_model(model, args.init, args.config)
    optimizer = torch.optim.Adam(model.main_parameters(), lr=args.lr)
    aux_optimizer = torch.optim.Adam(model.aux_parameters(), lr=args.aux_lr)

    images = load_images(args.data, args.patch_size)
    held = held_out(len(images), args.holdout, args.seed)
    val_x = None
    if held and args.val_every:
        val_x = CropSampler([images[i] for i in sorted(held)], args.patch_size, 1, args.seed + 1).batch(len(held))
    sampler = CropSampler([a for i, a in enumerate(images) if i not in held], args.patch_size,
                          args.crops_per_image, args.seed)

    step, seconds = 0, 0.0
    if ck:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        aux_optimizer.load_state_dict(ck["aux_optimizer"])
        sampler.load_state_dict(ck["sampler"])
        torch.set_rng_state(ck["torch_rng"])
        step, seconds = ck["step"], ck.get("seconds", 0.0)
        print(f"resumed {ck_path} at step {step}", flush=True)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {config.to_dict()}: {n_params:,} parameters; lmbda {args.lmbda}; "
          f"batch {args.batch_size}x{args.patch_size}^2; {args.threads} threads", flush=True)

    def save():
        save_checkpoint(ck_path, config=config.to_dict(), model=model.state_dict(), optimizer=optimizer.state_dict(),
                        aux_optimizer=aux_optimizer.state_dict(), sampler=sampler.state_dict(),
                        torch_rng=torch.get_rng_state(), step=step, seconds=seconds, lmbda=args.lmbda,
                        args=vars(args))

    new_log = not log_path.exists() or not args.resume
    log = open(log_path, "w" if new_log else "a")
    if new_log:
        log.write("step\tloss\tbpp\tmse\tpsnr\taux\tlr\tseconds\tval_bpp\tval_psnr\n")
    if args.init and new_log and val_x is not None:  # the starting point's validation, same held-out batch
        v = evaluate(model, val_x)
        log.write(f"0\t\t\t\t\t\t\t0.0\t{v[0]:.4f}\t{v[1]:.4f}\n")
        log.flush()
        print(f"step 0 (--init {args.init}): val bpp {v[0]:.4f}, val psnr {v[1]:.4f}", flush=True)
    acc, t_start, t_last, seconds0 = [], time.time(), time.time(), seconds
    while progress(step, seconds, args) < 1 and (not args.steps or step < args.steps):
        lr = lr_at(progress(step, seconds, args), args)
        for g in optimizer.param_groups:
            g["lr"] = lr
        acc.append(train_step(model, optimizer, aux_optimizer, sampler.batch(args.batch_size), args.lmbda, args.clip))
        step += 1
        seconds = seconds0 + time.time() - t_start
        last = step == args.steps or progress(step, seconds, args) >= 1
        val = ("", "")
        if val_x is not None and (step % args.val_every == 0 or last):
            val = tuple(f"{v:.4f}" for v in evaluate(model, val_x))
        if step % args.log_every == 0 or last or val[0]:
            m = {k: float(np.mean([a[k] for a in acc])) for k in acc[0]}
            now = time.time()
            row = (f"{step}\t{m['loss']:.5f}\t{m['bpp']:.5f}\t{m['mse']:.6f}\t{psnr(m['mse']):.3f}\t{m['aux']:.3f}\t"
                   f"{lr:.3g}\t{seconds:.1f}\t{val[0]}\t{val[1]}")
            log.write(row + "\n")
            log.flush()
            print(row + f"\t({(now - t_last) / len(acc):.3f} s/step)", flush=True)
            acc, t_last = [], now
        if step % args.save_every == 0 or last:
            save()
    log.close()
    print(f"done: step {step}, {seconds:.0f} s in all; checkpoint {ck_path}", flush=True)


if __name__ == "__main__":
    main()
