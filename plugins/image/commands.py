"""Image CLI: ``draw`` (``generate`` for image models) and the image models' part of
``polysteer generate`` (:class:`ImageGeneration`: conditions, steps, guidance, several seeds, and
one picture with unsteered / steered / sweep columns)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from polysteer import Command
from polysteer.cli import CommandError, GenerateExtension, Run, add_generate_arguments, run_generate


def parse_conditions(pairs: list[str]) -> dict[str, str]:
    """``["glasses=sunglasses", ...]`` as a condition dict; a malformed pair is a
    :class:`~polysteer.cli.CommandError`."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise CommandError(f"an image condition is ATTR=VALUE, got {pair!r}",
                               "Pass e.g. --condition glasses=sunglasses")
        out[key.strip()] = value.strip()
    return out


class ImageGeneration(GenerateExtension):
    """Image models in ``polysteer generate``: INPUTs (and ``--condition``) are avatar conditions
    ``ATTR=VALUE``; ``--count`` rows use seeds SEED, SEED+1, ...; the runs become one PNG at
    ``-o`` (columns: unsteered and steered, or the intensity sweep; 1 px gaps between cells)."""

    title = "diffusers pipelines (the avatars model, local pipeline folders)"
    modality = "image"
    default_output = "image.png"

    def recognises(self, path: Path) -> bool:
        return path.is_dir() and (path / "model_index.json").is_file()

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--count", type=int, default=1,
                            help="images (rows; seeds SEED, SEED+1, ...; default 1)")
        parser.add_argument("--steps", type=int, default=25, help="denoising steps (default 25)")
        parser.add_argument("--condition", action="append", default=[], metavar="ATTR=VALUE",
                            help="avatar condition, e.g. glasses=sunglasses (repeatable; default "
                                 "unconditional)")
        parser.add_argument("--guidance", type=float, default=1.0,
                            help="classifier-free guidance scale")
        parser.add_argument("--scale", type=int, default=None,
                            help="upscale factor for small images (default: to at least 128 pixels)")

    def inputs(self, adapter: Any, args: argparse.Namespace) -> Any:
        condition = parse_conditions([*args.condition, *(getattr(args, "inputs", None) or [])])
        if condition and not getattr(adapter, "is_avatar", False):
            raise CommandError(f"model {args.model!r} takes no ATTR=VALUE conditions",
                               "Leave out --condition and INPUTs for this pipeline")
        return condition or 1

    def check(self, args: argparse.Namespace) -> None:
        if args.count < 1 or args.steps < 1:
            raise CommandError(f"--count and --steps must be at least 1, got {args.count} and "
                               f"{args.steps}", "Pass e.g. --count 4 --steps 25")
        parse_conditions([*args.condition, *(getattr(args, "inputs", None) or [])])

    def options(self, adapter: Any, args: argparse.Namespace) -> dict[str, Any]:
        return {"num_inference_steps": args.steps, "guidance_scale": args.guidance,
                "_count": args.count}

    def generate(self, adapter: Any, inputs: Any, *, style: Any, intensity: float, seed: int,
                 options: dict[str, Any], stream: bool = False) -> Any:
        """One result per row (seed ``seed + row``), so rows match single-image runs."""
        options = dict(options)
        count = options.pop("_count", 1)
        steer = {} if style is None else {"style": style, "intensity": intensity}
        return [adapter.generate(inputs, seed=seed + k, **steer, **options) for k in range(count)]

    def describe(self, adapter: Any, result: Any) -> list[str]:
        return [line for row in result for line in adapter.describe_outputs(row)]

    def write(self, adapter: Any, runs: list[Run], output: Path, args: argparse.Namespace
              ) -> list[Path]:
        import torch

        from polysteer.plugins.image.adapter import image_grid, save_png, to_pil

        rows = [torch.cat([run.result[k].outputs for run in runs]) for k in range(len(runs[0].result))]
        grid = len(runs) > 1 or len(rows) > 1
        picture = image_grid(torch.cat(rows), columns=len(runs), pad=1 if grid else 0)
        scale = args.scale or max(1, -(-128 // rows[0].shape[-1]))
        if output.suffix.lower() != ".png":
            output = output.with_name(output.name + ".png")
        save_png(to_pil(picture, scale=scale)[0], output)
        return [output]

    def show(self, adapter: Any, runs: list[Run], args: argparse.Namespace) -> None:
        columns = " ".join("unsteered" if r.intensity is None else f"{r.intensity:g}" for r in runs)
        print(f"{len(runs[0].result)} row(s) x columns: {columns}")
        super().show(adapter, runs, args)


IMAGE_GENERATION = ImageGeneration()


def _draw_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="avatars",
                   help="shipped image model (avatars) or a local diffusers pipeline folder")
    add_generate_arguments(p, model=False, inputs=False)
    IMAGE_GENERATION.add_arguments(p)
    p.add_argument("-o", "--output", type=Path, default=Path("draw.png"), help="PNG to write")


def _draw_run(args: argparse.Namespace) -> int:
    args.inputs = []
    run_generate(args, modality="image")
    return 0


IMAGE_COMMANDS = {
    "draw": Command("draw images under a style (--compare: unsteered beside steered; --grid: an "
                    "intensity sweep)", _draw_args, _draw_run),
}
