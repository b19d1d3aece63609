#!/usr/bin/env python
"""Train the shipped ``avatars`` diffusion model: an attribute-conditioned UNet2DModel on cartoon faces.

    OMP_NUM_THREADS=2 python scripts/train_avatar_diffusion.py --out /work/avatar-train --budget-minutes 80

Data: ``--images`` avatars drawn by ``python-avatars`` and rendered by ``resvg-py`` (image ``i`` depends
only on ``(--seed, i)``), cached as safetensors under ``OUT/data``. Model: a diffusers ``UNet2DModel``
(:func:`polysteer.plugins.image.avatars.unet_config`, 4.7M parameters) whose class embedding is the sum
of one learned embedding per attribute (:class:`AttributeConditioner`), trained to predict the
velocity ``v`` (:func:`~polysteer.plugins.image.avatars.scheduler_config`): at the noisiest steps
``v`` is the clean image itself, so the loss rewards drawing what the condition asks for. Each
attribute is replaced by its "unspecified" entry with probability ``--p-drop`` and all of them with
``--p-uncond``, so one network is conditional, partially conditional and unconditional
(classifier-free guidance).

Reproducible: every step's batch, noise, timesteps, dropout and flips come from a generator seeded by
``(--seed, step)``, and the learning rate depends only on the step, so a run stopped by the time budget
is reproduced by ``--max-steps`` with the step count in its manifest. Resumable: ``OUT/checkpoint``
(safetensors: weights, EMA, AdamW moments; JSON: step, elapsed time) is rewritten atomically every
``--checkpoint-minutes``; rerunning the same command continues from it. ``OUT/log.jsonl`` holds the
loss curve, ``OUT/samples/`` sample grids, and ``OUT/final`` the exported fp16 EMA pipeline folder.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from polysteer.io import read_json, read_tensors, write_folder, write_json, write_tensors
from polysteer.plugins.image.avatars import (
    ATTRIBUTES,
    AttributeConditioner,
    AvatarPipeline,
    build_dataset,
    save_avatar_pipeline,
    scheduler_config,
    unet_config,
)

# Sample grid rows: (label, condition); every column shares its starting noise.
GRID_ROWS = [
    ("unconditional", {}),
    ("sunglasses", {"glasses": "sunglasses"}),
    ("glasses", {"glasses": "glasses"}),
    ("smile", {"mouth": "smile"}),
    ("sad", {"mouth": "sad"}),
    ("orange background", {"background": "orange"}),
    ("green background", {"background": "green"}),
    ("red hair, dark skin", {"hair_colour": "red", "skin": "dark"}),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("avatar-train"), help="work folder (outside git)")
    p.add_argument("--images", type=int, default=30000, help="dataset size")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--cond-lr-mult", type=float, default=10.0,
                   help="learning-rate multiplier of the attribute embeddings")
    p.add_argument("--ema", type=float, default=0.998, help="EMA decay (warmed up as (1+n)/(10+n))")
    p.add_argument("--p-drop", type=float, default=0.25, help="per-attribute condition dropout")
    p.add_argument("--p-uncond", type=float, default=0.15, help="probability that every attribute is dropped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-minutes", type=float, default=80.0, help="training time budget over all resumes")
    p.add_argument("--max-steps", type=int, default=None, help="stop at this step (reproduces a run)")
    p.add_argument("--checkpoint-minutes", type=float, default=5.0)
    p.add_argument("--sample-minutes", type=float, default=10.0)
    p.add_argument("--sample-steps", type=int, default=25, help="DDIM steps for sample grids")
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--export-to", type=Path, default=None,
                   help="only export OUT/checkpoint's EMA weights as a pipeline folder here, then stop")
    return p.parse_args(argv)


def load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """The rendered dataset, from the cache or rendered once (a few minutes)."""
    path = args.out / "data" / f"avatars-{args.size}px-{args.images}-seed{args.seed}.safetensors"
    if path.exists():
        data = read_tensors(path)
        return data["images"], data["labels"]
    images, labels = build_dataset(args.images, args.size, args.seed)
    write_tensors(path, {"images": images, "labels": labels},
                  metadata={"attributes": json.dumps({k: list(v) for k, v in ATTRIBUTES.items()})})
    return images, labels


class Trainer:
    """Model, EMA copy, optimiser and the step function; saves and restores itself."""

    def __init__(self, args: argparse.Namespace) -> None:
        from diffusers import DDPMScheduler, UNet2DModel

        torch.manual_seed(args.seed)
        self.args = args
        self.unet = UNet2DModel(**unet_config(args.size))
        dim = self.unet.config.block_out_channels[0] * 4  # the time-embedding width
        self.cond = AttributeConditioner(dim)
        self.ema_unet = UNet2DModel(**unet_config(args.size)).requires_grad_(False)
        self.ema_cond = AttributeConditioner(dim).requires_grad_(False)
        self._copy_ema(1.0)
        self.params = list(self.unet.parameters()) + list(self.cond.parameters())
        # the attribute embeddings start tiny and only grow once the UNet uses them: a larger
        # learning rate for them gets the condition working within a CPU-hour budget
        self.opt = torch.optim.AdamW([{"params": list(self.unet.parameters()), "lr_mult": 1.0},
                                      {"params": list(self.cond.parameters()), "lr_mult": args.cond_lr_mult}],
                                     lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
        self.noise = DDPMScheduler(**scheduler_config())
        self.step = 0
        self.elapsed = 0.0
        self.history: list[dict] = []  # {"from_step", "cond_lr_mult"} per stretch of the run

    @torch.no_grad()
    def _copy_ema(self, weight: float) -> None:
        for ema, p in zip(list(self.ema_unet.parameters()) + list(self.ema_cond.parameters()),
                          list(self.unet.parameters()) + list(self.cond.parameters()), strict=True):
            ema.lerp_(p, weight)

    def lr(self, step: int) -> float:
        return self.args.lr * min(1.0, (step + 1) / self.args.warmup)

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        a = self.args
        g = torch.Generator().manual_seed(a.seed * 1_000_003 + self.step)
        idx = torch.randint(len(images), (a.batch,), generator=g)
        x = images[idx].float() / 127.5 - 1.0
        flip = torch.rand(a.batch, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = labels[idx].clone()
        drop = torch.rand(y.shape, generator=g) < a.p_drop
        drop |= (torch.rand(a.batch, generator=g) < a.p_uncond)[:, None]
        y[drop] = 0
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(self.noise.config.num_train_timesteps, (a.batch,), generator=g)
        noisy = self.noise.add_noise(x, noise, t)
        pred = self.unet(noisy, t, class_labels=self.cond(y)).sample
        v_prediction = self.noise.config.prediction_type == "v_prediction"
        target = self.noise.get_velocity(x, noise, t) if v_prediction else noise
        loss = F.mse_loss(pred, target)
        for group in self.opt.param_groups:
            group["lr"] = self.lr(self.step) * group["lr_mult"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.step += 1
        n = self.step
        self._copy_ema(1.0 - min(a.ema, (1 + n) / (10 + n)))
        return loss.item()

    def ema_pipeline(self) -> AvatarPipeline:
        from diffusers import DDIMScheduler

        return AvatarPipeline(self.ema_unet.eval(), self.ema_cond.eval(), DDIMScheduler(**scheduler_config()))

    # ---- checkpoints -------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        tensors = {f"unet.{k}": v for k, v in self.unet.state_dict().items()}
        tensors |= {f"cond.{k}": v for k, v in self.cond.state_dict().items()}
        tensors |= {f"ema_unet.{k}": v for k, v in self.ema_unet.state_dict().items()}
        tensors |= {f"ema_cond.{k}": v for k, v in self.ema_cond.state_dict().items()}
        state = self.opt.state_dict()
        for i, s in state["state"].items():
            tensors |= {f"opt.{i}.{k}": torch.as_tensor(v) for k, v in s.items()}

        def write(tmp: Path) -> None:
            write_tensors(tmp / "state.safetensors", tensors)
            write_json(tmp / "state.json", {"step": self.step, "elapsed_s": self.elapsed,
                                            "history": self.history,
                                            "args": {k: str(v) for k, v in vars(self.args).items()}})

        write_folder(folder, write)

    def load(self, folder: Path) -> None:
        tensors = read_tensors(folder / "state.safetensors")
        meta = read_json(folder / "state.json")
        for prefix, module in (("unet.", self.unet), ("cond.", self.cond), ("ema_unet.", self.ema_unet),
                               ("ema_cond.", self.ema_cond)):
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        state = self.opt.state_dict()
        per: dict[int, dict] = {}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, i, name = key.split(".", 2)
                per.setdefault(int(i), {})[name] = value
        state["state"] = per
        self.opt.load_state_dict(state)
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed_s"])
        # runs from before --cond-lr-mult existed trained with one learning rate for everything
        self.history = meta.get("history", [{"from_step": 0, "cond_lr_mult": 1.0}])


def save_grid(pipe: AvatarPipeline, path: Path, size: int, steps: int, guidance: float = 1.0) -> None:
    """One row per :data:`GRID_ROWS` condition, eight columns sharing their noise."""
    from PIL import Image

    cols = 8
    noise = torch.randn(cols, 3, size, size, generator=torch.Generator().manual_seed(1234))
    rows = [pipe(cols, cond, latents=noise.clone(), num_inference_steps=steps, guidance_scale=guidance)
            for _, cond in GRID_ROWS]
    grid = torch.cat(rows)  # (rows*cols, 3, H, W)
    grid = grid.view(len(rows), cols, 3, size, size).permute(2, 0, 3, 1, 4).reshape(3, len(rows) * size,
                                                                                     cols * size)
    pixels = (grid * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    image = Image.fromarray(pixels).resize((cols * size * 3, len(rows) * size * 3), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    image.save(tmp)
    os.replace(tmp, path)


def trim_log(path: Path, step: int) -> None:
    """Drop log lines past the checkpoint being resumed (they will be written again)."""
    if not path.exists():
        return
    lines = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
    path.write_text("".join(ln + "\n" for ln in lines))


def reproduce_commands(trainer: Trainer, args: argparse.Namespace) -> list[str]:
    """One command per stretch of the run (each resumes the previous one's checkpoint)."""
    ends = [h["from_step"] for h in trainer.history[1:]] + [trainer.step]
    return [f"python scripts/train_avatar_diffusion.py --images {args.images} --size {args.size} "
            f"--batch {args.batch} --seed {args.seed} --lr {args.lr} --warmup {args.warmup} --ema {args.ema} "
            f"--cond-lr-mult {h['cond_lr_mult']} --max-steps {end} --budget-minutes 100000"
            for h, end in zip(trainer.history, ends, strict=True)]


def export(trainer: Trainer, args: argparse.Namespace, final: Path) -> None:
    manifest = {
        "name": "avatars", "trained_by": "scripts/train_avatar_diffusion.py", "steps": trainer.step,
        "train_seconds": round(trainer.elapsed, 1), "images": args.images, "size": args.size,
        "batch": args.batch, "seed": args.seed, "lr": args.lr, "ema": args.ema,
        "cond_lr_mult": args.cond_lr_mult, "history": trainer.history,
        "parameters": sum(p.numel() for p in trainer.unet.parameters()),
        "reproduce": reproduce_commands(trainer, args),
        "data": "python-avatars (MIT); artwork: Avataaars by Pablo Stanley, free for personal and "
                "commercial use (https://avataaars.com)",
        "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
    }
    save_avatar_pipeline(final, trainer.ema_unet, trainer.ema_cond, manifest)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    random.seed(args.seed)
    if args.export_to is not None:
        trainer = Trainer(args)
        trainer.load(args.out / "checkpoint")
        export(trainer, args, args.export_to)
        print(f"exported step {trainer.step} -> {args.export_to}", file=sys.stderr)
        return 0
    images, labels = load_data(args)
    trainer = Trainer(args)
    ckpt, log_path = args.out / "checkpoint", args.out / "log.jsonl"
    if (ckpt / "state.json").exists():
        trainer.load(ckpt)
        print(f"resumed at step {trainer.step} ({trainer.elapsed / 60:.1f} min trained)", file=sys.stderr)
    trim_log(log_path, trainer.step)
    if not trainer.history or trainer.history[-1]["cond_lr_mult"] != args.cond_lr_mult:
        trainer.history.append({"from_step": trainer.step, "cond_lr_mult": args.cond_lr_mult})
    budget = args.budget_minutes * 60
    last_ckpt = last_sample = time.monotonic()
    if trainer.step == 0:
        first = args.out / "samples" / "step-000000.png"
        save_grid(trainer.ema_pipeline(), first, args.size, args.sample_steps)
    losses: list[float] = []
    bar = tqdm(desc="train", initial=trainer.step, total=args.max_steps, unit="step", mininterval=5.0)
    start, start_elapsed = time.monotonic(), trainer.elapsed
    with log_path.open("a") as log:
        while trainer.elapsed < budget and (args.max_steps is None or trainer.step < args.max_steps):
            losses.append(trainer.train_step(images, labels))
            trainer.elapsed = start_elapsed + time.monotonic() - start
            bar.update(1)
            if trainer.step % args.log_every == 0:
                rate = (trainer.step - bar.initial) / max(time.monotonic() - start, 1e-9)
                record = {"step": trainer.step, "loss": sum(losses) / len(losses),
                          "lr": trainer.lr(trainer.step), "elapsed_s": round(trainer.elapsed, 1),
                          "steps_per_s": round(rate, 3)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(loss=f"{record['loss']:.4f}")
                losses.clear()
            now = time.monotonic()
            if now - last_sample > args.sample_minutes * 60:
                save_grid(trainer.ema_pipeline(), args.out / "samples" / f"step-{trainer.step:06d}.png",
                          args.size, args.sample_steps)
                last_sample = time.monotonic()
            if now - last_ckpt > args.checkpoint_minutes * 60:
                trainer.save(ckpt)
                last_ckpt = time.monotonic()
    bar.close()
    trainer.save(ckpt)
    pipe = trainer.ema_pipeline()
    save_grid(pipe, args.out / "samples" / f"step-{trainer.step:06d}.png", args.size, args.sample_steps)
    save_grid(pipe, args.out / "samples" / "final-cfg3.png", args.size, args.sample_steps, guidance=3.0)
    export(trainer, args, args.out / "final")
    minutes = trainer.elapsed / 60
    print(f"done: {trainer.step} steps in {minutes:.1f} min -> {args.out / 'final'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
