"""The text demo (``polysteer demo-text``): SmolLM2-135M-Instruct answering one prompt in several
shipped styles at once.

Every row of one batched ``generate`` call carries its own style (one ``(style, intensities)``
pair per style, each switched on for its row only), so the demo also shows per-row steering, and
row 0 stays unsteered, bit for bit the plain model.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from polysteer import Style, load_model, steer
from polysteer.io import configs_dir

DEMO_STYLES = ("positive", "formal", "concise", "golden-gate", "pirate")
DEMO_PROMPT = "Describe your morning in two sentences."


def shipped_styles(names: tuple[str, ...] = DEMO_STYLES) -> list[Style]:
    """The shipped styles among ``names`` (configs/style/NAME.yaml), in order."""
    folder = configs_dir() / "style"
    return [Style.load(folder / f"{n}.yaml") for n in names if (folder / f"{n}.yaml").exists()]


def run_text_demo(model: str = "smollm2", prompt: str = DEMO_PROMPT, max_new_tokens: int = 40,
                  output_dir: str | Path | None = None) -> list[tuple[str, str]]:
    """Print the prompt answered unsteered and in each shipped style; return ``(name, text)``."""
    start = time.perf_counter()
    adapter = load_model(model)
    styles = shipped_styles()
    if not styles:
        raise FileNotFoundError(f"no shipped styles found in {configs_dir() / 'style'}")
    rows = len(styles) + 1
    pairs = [(s, [1.0 if r == i + 1 else 0.0 for r in range(rows)]) for i, s in enumerate(styles)]
    print(f"{adapter.name}: '{prompt}' (greedy, {max_new_tokens} new tokens, one batched call; "
          "each row has its own style)\n")
    with steer(adapter, pairs) as run:
        out = adapter.generate([prompt] * rows, max_new_tokens=max_new_tokens)
    texts = adapter.texts(out)
    names = ["unsteered", *(s.name for s in styles)]
    for name, text in zip(names, texts, strict=True):
        print(f"[{name}]\n  {text}\n")
    plain = adapter.texts(adapter.generate([prompt], max_new_tokens=max_new_tokens))[0]
    print(f"row 0 equals the plain model: {plain == texts[0]}; "
          f"{len(run.clock.history)} steps, every one steered; {time.perf_counter() - start:.0f} s")
    if output_dir is not None:
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "demo.txt").write_text(
            "".join(f"[{n}]\n{t}\n\n" for n, t in zip(names, texts, strict=True)))
    torch.manual_seed(0)
    return list(zip(names, texts, strict=True))
