"""Train Unmask's networks.

    python -m training.train --task analyser  [--device cpu|cuda] [--resume] [--minutes M]
    python -m training.train --task inpainter --preset fast|hq [--device cpu|cuda] [--resume]

Checkpoints (runs/<task>/last.pt, or --run-dir, every --ckpt-minutes) hold model,
optimiser and step, and are loaded with `weights_only=True`: `--resume` continues a
run on another machine from its copied run folder (the data carried with
training.data.pack). `--amp` computes the forward passes in bfloat16 (autocast;
GPUs: no loss scaling needed), the losses and weights in float32. Validation runs every
--val-every steps on the fixed val split; when the validation score improves the
model is exported to models/weights/<name>.onnx (the shipped weights) and a
sample grid PNG is written to runs/<task>/. Losses and metrics go to
runs/<task>/log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.networks import Analyser, Inpainter, PatchDiscriminator
from models.spec import (ANALYSER, CANONICAL_SIZE, HIDDEN_REGION, INPAINTER_PRESETS, WEIGHTS_DIR, draw_landmark_map,
                         load_canonical_face)
from training.data.dataset import CACHE, RAW, FaceCache, RealSegCache, SampleMaker

ROOT = Path(__file__).resolve().parents[1]


def to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC BGR list -> float NCHW in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def ssim(x, y, c1=0.01 ** 2, c2=0.03 ** 2):
    mu_x = F.avg_pool2d(x, 7, 1, 3)
    mu_y = F.avg_pool2d(y, 7, 1, 3)
    sx = F.avg_pool2d(x * x, 7, 1, 3) - mu_x ** 2
    sy = F.avg_pool2d(y * y, 7, 1, 3) - mu_y ** 2
    sxy = F.avg_pool2d(x * y, 7, 1, 3) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sx + sy + c2))


class Trainer:
    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.run_dir = args.run_dir or ROOT / "runs" / args.name
        self.run_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(args.seed)
        np.random.seed(args.seed)
        self.train_faces = FaceCache("train", args.cache, limit=args.limit)
        self.val_faces = FaceCache("val", args.cache, limit=min(args.limit or 10**9, args.val_size))
        self.train_maker = SampleMaker(self.train_faces, args.templates, train=True, seed=args.seed)
        self.val_maker = SampleMaker(self.val_faces, args.templates, train=False)
        self.step = 0
        self.best = -math.inf
        self.log = open(self.run_dir / "log.jsonl", "a")

    def save(self, extra: dict):
        state = {"step": self.step, "best": self.best, **extra}
        tmp = self.run_dir / "last.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.run_dir / "last.pt")

    def load(self):
        path = self.run_dir / "last.pt"
        if not path.exists():
            return None
        state = torch.load(path, map_location=self.device, weights_only=True)
        self.step, self.best = int(state["step"]), float(state["best"])
        print(f"resumed {path} at step {self.step}", file=sys.stderr)
        return state

    def autocast(self):
        """bfloat16 forward passes with --amp (float32 otherwise)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bool(self.args.amp))

    def write_log(self, **row):
        row = {"step": self.step, "time": time.time(), **row}
        self.log.write(json.dumps(row) + "\n")
        self.log.flush()

    def batch_indices(self, n):
        rng = np.random.default_rng((self.args.seed, self.step))
        if not self.args.dataset_weights:
            return rng.integers(0, len(self.train_faces), n)
        if not hasattr(self, "_sample_p"):
            # Per-face sampling weights from per-dataset ones (e.g. the diverse faces twice as often).
            w = dict(kv.split("=") for kv in self.args.dataset_weights)
            p = np.array([float(w.get(d, 1.0)) for d in self.train_faces.dataset])
            self._sample_p = p / p.sum()
        return rng.choice(len(self.train_faces), n, p=self._sample_p)

    def run(self):
        args = self.args
        self.t_start = time.time()
        t_end = time.time() + args.minutes * 60 if args.minutes else math.inf
        last_ckpt = time.time()
        while self.step < args.steps and time.time() < t_end:
            losses = self.train_step()
            self.step += 1
            if self.step % 20 == 0:
                self.write_log(**{k: round(float(v), 5) for k, v in losses.items()})
                print(f"step {self.step} " + " ".join(f"{k}={float(v):.4f}" for k, v in losses.items()),
                      file=sys.stderr, flush=True)
            if self.step % args.val_every == 0:
                self.validate()
            if time.time() - last_ckpt > args.ckpt_minutes * 60:
                self.checkpoint()
                last_ckpt = time.time()
        self.validate()
        self.checkpoint()


class AnalyserTrainer(Trainer):
    def __init__(self, args):
        super().__init__(args)
        self.model = Analyser().to(self.device)
        canon = load_canonical_face() / CANONICAL_SIZE
        with torch.no_grad():  # start the landmark head at the mean face
            self.model.landmarks.bias.copy_(torch.from_numpy(canon.reshape(-1)).float())
            self.model.landmarks.weight.mul_(0.1)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=1e-4)
        self.real_train = RealSegCache("train", args.cache)
        self.real_eval = RealSegCache("eval", args.cache)
        w = torch.ones(468)
        w[HIDDEN_REGION] = 3.0  # the hidden points are the job; weigh them up
        self.lm_weight = w.to(self.device)
        state = self.load() if args.resume else None
        if state:
            self.model.load_state_dict(state["model"])
            self.opt.load_state_dict(state["opt"])
        elif args.init_from:
            # Warm start: take every weight whose name and shape still match.
            src = torch.load(args.init_from, map_location="cpu", weights_only=True)
            src = src.get("model", src)  # a checkpoint, or a plain state dict (models/weights/*.pt)
            own = self.model.state_dict()
            keep = {k: v for k, v in src.items()
                    if k in own and v.shape == own[k].shape and not k.startswith(tuple(args.init_skip))}
            self.model.load_state_dict(keep, strict=False)
            print(f"warm start from {args.init_from}: {len(keep)}/{len(own)} tensors", file=sys.stderr)

    def lr_at(self, step):
        warm = 300
        if step < warm:
            return self.args.lr * (step + 1) / warm
        return self.args.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, step / self.args.steps)))

    def train_step(self):
        args = self.args
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(self.step)
        idx = self.batch_indices(args.batch)
        samples = [self.train_maker.analyser_sample(int(i), self.step) for i in idx]
        images = [s["image"] for s in samples]
        masks = [s["mask"] for s in samples]
        lm_valid = [1.0] * len(samples)
        genders = [float(s["gender"]) for s in samples]
        # Real labelled photos for the segmentation head (no landmark / gender targets).
        n_real = int(args.batch * 0.15) if len(self.real_train) else 0
        rng = np.random.default_rng((args.seed, self.step, 7))
        size = ANALYSER["input_size"]
        from training.data.synth import augment
        import cv2
        for j in rng.integers(0, max(1, len(self.real_train)), n_real):
            im = cv2.resize(self.real_train.images[j], (size, size), interpolation=cv2.INTER_AREA)
            mk = cv2.resize(self.real_train.masks[j], (size, size), interpolation=cv2.INTER_AREA)
            im, (mk,), _ = augment(im, [mk.astype(np.float32) / 255], np.zeros((468, 2)), rng)
            images.append(im)
            masks.append((mk > 0.5).astype(np.float32))
            lm_valid.append(0.0)
            genders.append(-1.0)
        x = to_tensor(images).to(self.device)
        y_mask = torch.from_numpy(np.stack(masks))[:, None].to(self.device)
        y_lm = torch.from_numpy(np.stack([s["landmarks"] for s in samples])).float().to(self.device)
        y_g = torch.tensor(genders, device=self.device)
        lm_ok = torch.tensor(lm_valid, device=self.device)
        self.model.train()
        with self.autocast():
            mask_logits, g_logit, lm = self.model(x)
        mask_logits, g_logit, lm = mask_logits.float(), g_logit.float(), lm.float()
        bce = F.binary_cross_entropy_with_logits(mask_logits, y_mask)
        p = torch.sigmoid(mask_logits)
        dice = 1 - (2 * (p * y_mask).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y_mask.sum((1, 2, 3)) + 1)
        n_lm = len(samples)
        lm_err = (lm[:n_lm] - y_lm).abs().sum(-1)  # L1 per point, in crop fractions
        lm_loss = (lm_err * self.lm_weight).mean() / self.lm_weight.mean()
        g_ok = y_g >= 0
        g_loss = (F.binary_cross_entropy_with_logits(g_logit[g_ok], y_g[g_ok])
                  if g_ok.any() else torch.zeros((), device=self.device))
        loss = bce + dice.mean() + 20 * lm_loss + args.gender_weight * g_loss
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step()
        del lm_ok
        return dict(loss=loss.item(), bce=bce.item(), dice=dice.mean().item(),
                    lm_px=lm_err.mean().item() * CANONICAL_SIZE / 2, gender=g_loss.item())

    @torch.no_grad()
    def validate(self):
        from training.metrics import analyser_metrics
        self.model.eval()
        preds, samples = [], []
        for i in range(len(self.val_faces)):
            samples.append(self.val_maker.analyser_sample(i))
        for k in range(0, len(samples), 64):
            chunk = samples[k:k + 64]
            m, g, lm = self.model(to_tensor([s["image"] for s in chunk]).to(self.device))
            preds += [dict(mask=torch.sigmoid(m[j, 0]).cpu().numpy(), gender=torch.sigmoid(g[j]).item(),
                           landmarks=lm[j].cpu().numpy()) for j in range(len(chunk))]
        met = analyser_metrics(samples, preds)
        score = met["iou"] + (1 - met["nme_hidden"] * 5) + met["gender_bacc_adult"]
        met["score"] = score
        self.write_log(val=met)
        print(f"val step {self.step}: " + json.dumps({k: round(v, 4) for k, v in met.items()}),
              file=sys.stderr, flush=True)
        if score > self.best:
            self.best = score
            self.export()
            self.grid(samples[:16], preds[:16])

    def export(self):
        from export.onnx import export_model
        path = self.args.export_dir / "analyser.onnx"
        export_model("analyser", self.model.cpu().eval(), path)
        self.model.to(self.device)
        print(f"exported {path}", file=sys.stderr)

    def grid(self, samples, preds):
        from training.metrics import analyser_grid
        import cv2
        cv2.imwrite(str(self.run_dir / f"samples_{self.step:06d}.png"), analyser_grid(samples, preds))

    def checkpoint(self):
        self.save({"model": self.model.state_dict(), "opt": self.opt.state_dict()})


class InpainterTrainer(Trainer):
    def __init__(self, args):
        super().__init__(args)
        self.preset = args.preset
        self.size = INPAINTER_PRESETS[args.preset]["size"]
        self.G = Inpainter(args.preset, skin_normalised=args.skin_normalised).to(self.device)
        self.D = PatchDiscriminator().to(self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=args.lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=args.lr, betas=(0.5, 0.9))
        # Perceptual features from our own analyser's encoder (no downloadable VGG here): the
        # analyser being trained (runs/analyser/last.pt) when there is one, else the shipped one.
        self.percept = None
        ana = ROOT / "runs" / "analyser" / "last.pt"
        state = (torch.load(ana, map_location="cpu", weights_only=True)["model"] if ana.exists() else
                 torch.load(WEIGHTS_DIR / "analyser.pt", map_location="cpu", weights_only=True)
                 if (WEIGHTS_DIR / "analyser.pt").exists() else None)
        if state is not None:
            a = Analyser()
            a.load_state_dict(state)
            self.percept = a.to(self.device).eval().requires_grad_(False)
        else:
            print("note: no analyser weights: training without the perceptual loss", file=sys.stderr)
        state = self.load() if args.resume else None
        if state:
            self.G.load_state_dict(state["G"])
            self.D.load_state_dict(state["D"])
            self.opt_g.load_state_dict(state["opt_g"])
            self.opt_d.load_state_dict(state["opt_d"])
        elif args.init_from:
            # Warm start the generator (a checkpoint's "G", or a plain state dict such as the
            # shipped models/weights/inpainter_fast.pt); the discriminator starts fresh.
            src = torch.load(args.init_from, map_location="cpu", weights_only=True)
            self.G.load_state_dict(src.get("G", src))
            print(f"warm start of the generator from {args.init_from}", file=sys.stderr)

    def make_batch(self, samples, noisy: bool):
        rng = np.random.default_rng((self.args.seed, self.step, 3))
        maps = []
        for s in samples:
            lm = s["landmarks"]
            if noisy:  # the analyser's landmarks are imperfect; learn to cope
                lm = lm + rng.normal(0, 0.012 * self.size, lm.shape) + rng.normal(0, 0.01 * self.size, 2)
            maps.append(draw_landmark_map(lm, self.size))
        d = self.device
        image = to_tensor([s["image"] for s in samples]).to(d)
        target = to_tensor([s["target"] for s in samples]).to(d)
        hole = torch.from_numpy(np.stack([s["hole"] for s in samples]))[:, None].to(d)
        lmap = torch.from_numpy(np.stack(maps))[:, None].to(d)
        g = np.array([s["gender"] for s in samples], np.float32)
        gender = torch.from_numpy(np.where(g < 0, 0.5, g)).to(d)
        return image, target, hole, lmap, gender

    def train_step(self):
        args = self.args
        if args.lr_end is not None and args.minutes:
            # Cosine decay over this run's wall-clock budget: CPU runs are sized in minutes.
            frac = min(1.0, (time.time() - self.t_start) / (args.minutes * 60))
            lr = args.lr_end + (args.lr - args.lr_end) * 0.5 * (1 + math.cos(math.pi * frac))
            for opt in (self.opt_g, self.opt_d):
                for g in opt.param_groups:
                    g["lr"] = lr
        idx = self.batch_indices(args.batch)
        samples = [self.train_maker.inpainter_sample(int(i), self.step, self.preset) for i in idx]
        image, target, hole, lmap, gender = self.make_batch(samples, noisy=True)
        self.G.train()
        with self.autocast():
            out = self.G(image, hole, lmap, gender)
        out = out.float()
        use_gan = self.step >= args.gan_start
        losses = {}
        if use_gan:
            with self.autocast():
                real_logits, _ = self.D(target, hole, lmap, gender)
                fake_logits, _ = self.D(out.detach(), hole, lmap, gender)
            real_logits, fake_logits = real_logits.float(), fake_logits.float()
            d_loss = F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            losses["d"] = d_loss.item()
        hole_frac = hole.mean().clamp_min(1e-3)
        l1_hole = ((out - target).abs() * hole).mean() / hole_frac
        l1_all = (out - target).abs().mean()
        ssim_loss = 1 - ssim(out, target).mean()
        loss = 6 * l1_hole + l1_all + ssim_loss
        losses.update(l1_hole=l1_hole.item(), ssim=ssim_loss.item())
        if self.percept is not None:
            with self.autocast():
                fo = self.percept.features(F.interpolate(out, size=128, mode="bilinear", align_corners=False))
                ft = self.percept.features(F.interpolate(target, size=128, mode="bilinear", align_corners=False))
            perc = sum(F.l1_loss(a.float(), b.float()) for a, b in zip(fo[1:4], ft[1:4]))
            loss = loss + 0.2 * perc
            losses["perc"] = perc.item()
        if use_gan:
            with self.autocast():
                fake_logits, ff = self.D(out, hole, lmap, gender)
                with torch.no_grad():
                    _, fr = self.D(target, hole, lmap, gender)
            adv = -fake_logits.float().mean()
            fm = sum(F.l1_loss(a.float(), b.float()) for a, b in zip(ff, fr))
            loss = loss + args.adv_weight * adv + 0.1 * fm
            losses.update(adv=adv.item(), fm=fm.item())
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.G.parameters(), 5.0)
        self.opt_g.step()
        losses["loss"] = loss.item()
        return losses

    @torch.no_grad()
    def validate(self):
        from training.metrics import inpainter_metrics
        self.G.eval()
        samples = [self.val_maker.inpainter_sample(i, 0, self.preset) for i in range(len(self.val_faces))]
        outs = []
        for k in range(0, len(samples), 32):
            chunk = samples[k:k + 32]
            image, target, hole, lmap, gender = self.make_batch(chunk, noisy=False)
            o = self.G(image, hole, lmap, gender)
            outs += [(o[j].permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
                     for j in range(len(chunk))]
        met = inpainter_metrics(samples, outs)
        met["score"] = met["psnr_hole"]
        self.write_log(val=met)
        print(f"val step {self.step}: " + json.dumps({k: round(v, 4) for k, v in met.items()}),
              file=sys.stderr, flush=True)
        if met["score"] > self.best:
            self.best = met["score"]
            self.export()
            from training.metrics import inpainter_grid
            import cv2
            cv2.imwrite(str(self.run_dir / f"samples_{self.step:06d}.png"), inpainter_grid(samples[:12], outs[:12]))

    def export(self):
        from export.onnx import export_model
        name = f"inpainter_{self.preset}"
        path = self.args.export_dir / f"{name}.onnx"
        export_model(name, self.G.cpu().eval(), path)
        self.G.to(self.device)
        print(f"exported {path}", file=sys.stderr)

    def checkpoint(self):
        self.save({"G": self.G.state_dict(), "D": self.D.state_dict(),
                   "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Train Unmask's analyser or inpainter.")
    ap.add_argument("--task", choices=["analyser", "inpainter"], required=True)
    ap.add_argument("--preset", choices=list(INPAINTER_PRESETS), default="fast")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--amp", action="store_true",
                    help="bfloat16 forward passes (autocast); losses and weights stay float32")
    ap.add_argument("--cache", type=Path, default=CACHE, help="the prepared data (default data/cache)")
    ap.add_argument("--templates", type=Path, default=RAW / "maskthefacetemplates",
                    help="MaskTheFace templates for the synthetic coverings (training.data.prepare extracts them)")
    ap.add_argument("--run-dir", type=Path, default=None,
                    help="checkpoints, logs and sample grids (default runs/<task or inpainter_preset>)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--minutes", type=float, default=0, help="stop after this long (0: no limit)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lr-end", type=float, default=None,
                    help="inpainter: cosine-decay the learning rate to this over --minutes")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--val-every", type=int, default=500)
    ap.add_argument("--val-size", type=int, default=400)
    ap.add_argument("--ckpt-minutes", type=float, default=3)
    ap.add_argument("--gan-start", type=int, default=1500)
    ap.add_argument("--adv-weight", type=float, default=0.02)
    ap.add_argument("--limit", type=int, default=0, help="use only N training faces (smoke runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset-weights", nargs="*", default=[], metavar="DATASET=W",
                    help="sample faces of these datasets W times as often (e.g. utkface_extra=2)")
    ap.add_argument("--gender-weight", type=float, default=0.5, help="analyser: weight of the gender loss")
    ap.add_argument("--export-dir", type=Path, default=WEIGHTS_DIR,
                    help="where improved weights are exported (default: the shipped weights folder; "
                         "give a candidates folder to promote them only after training.evaluate --real)")
    ap.add_argument("--skin-normalised", action=argparse.BooleanOptionalAction, default=None,
                    help="inpainter: predict in the colour space of the visible skin around the hole "
                         "(default: the preset's setting in models.spec.INPAINTER_PRESETS)")
    ap.add_argument("--init-from", type=Path, help="warm start from a checkpoint (matching weights only)")
    ap.add_argument("--init-skip", nargs="*", default=[], metavar="PREFIX",
                    help="parameter name prefixes not taken from --init-from (e.g. fc. landmarks.)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but PyTorch sees no CUDA device", file=sys.stderr)
        return 2
    args.name = args.task if args.task == "analyser" else f"inpainter_{args.preset}"
    trainer = AnalyserTrainer(args) if args.task == "analyser" else InpainterTrainer(args)
    trainer.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
