"""Image CLI command ``draw``: one image (or a few) under a style, side by side or as a sweep."""

from __future__ import annotations

import argparse
from pathlib import Path

from polysteer import Command, load_model, load_style
from polysteer.console import say


def _draw_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="avatars",
                   help="shipped image model (avatars) or a local diffusers pipeline folder")
    p.add_argument("--style", help="style YAML file or shipped style name (none: the plain model)")
    p.add_argument("--intensity", type=float, default=1.0, help="style intensity (default 1.0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the starting noise")
    p.add_argument("--count", type=int, default=1, help="images (seeds SEED, SEED+1, ...; default 1)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
    p.add_argument("--condition", action="append", default=[], metavar="ATTR=VALUE",
                   help="avatar condition, e.g. glasses=sunglasses (repeatable; default unconditional)")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale")
    p.add_argument("--compare", action="store_true", help="unsteered and steered side by side")
    p.add_argument("--grid", type=int, nargs="?", const=5, default=None, metavar="N",
                   help="intensity sweep 0..INTENSITY in N columns (default 5)")
    p.add_argument("--scale", type=int, default=None,
                   help="upscale factor for small images (default: to at least 128 pixels)")
    p.add_argument("-o", "--output", type=Path, default=Path("draw.png"), help="PNG to write")


def _load(name: str):
    """A local pipeline folder or shipped image model by name, else a shipped model config."""
    from polysteer.plugins.image.models import EMBEDDED

    if Path(name).exists() or name in EMBEDDED:
        return load_model({"kind": "diffusers", "name": name})
    return load_model(name)


def _condition(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"--condition expects ATTR=VALUE (e.g. glasses=sunglasses), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def intensities(args: argparse.Namespace) -> list[float]:
    """The columns of the picture: one intensity, the pair (0, I), or a sweep 0..I."""
    if args.grid:
        n = max(2, args.grid)
        return [args.intensity * i / (n - 1) for i in range(n)]
    if args.compare:
        return [0.0, args.intensity]
    return [args.intensity]


def picture_is_grid(args: argparse.Namespace) -> bool:
    return bool(args.compare or args.grid or args.count > 1)


def _draw_run(args: argparse.Namespace) -> int:
    import torch

    from polysteer.plugins.image.adapter import image_grid, save_png, to_pil

    if (args.compare or args.grid) and not args.style:
        raise SystemExit("--compare and --grid need --style")
    adapter = _load(args.model)
    style = load_style(args.style) if args.style else None
    condition = _condition(args.condition)
    columns = intensities(args)
    rows = []
    for k in range(args.count):
        inputs: object = condition if adapter.is_avatar and condition else 1
        images = [adapter.generate(inputs, style=style, intensity=i, seed=args.seed + k,
                                   num_inference_steps=args.steps, guidance_scale=args.guidance).outputs
                  for i in columns]
        rows.append(torch.cat(images))
    side = rows[0].shape[-1]
    picture = image_grid(torch.cat(rows), columns=len(columns), pad=1 if picture_is_grid(args) else 0)
    scale = args.scale or max(1, -(-128 // side))
    save_png(to_pil(picture, scale=scale)[0], args.output)
    label = " ".join(f"{i:g}" for i in columns)
    say(f"wrote {args.output} ({args.count} row(s) x intensities {label})")
    return 0


IMAGE_COMMANDS = {
    "draw": Command("draw images under a style (--compare: unsteered beside steered; --grid: an "
                    "intensity sweep)", _draw_args, _draw_run),
}
