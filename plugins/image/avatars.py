"""Procedural cartoon avatars (PyPI ``python-avatars``, rendered with ``resvg-py``) and the
attribute-conditioned diffusion model polysteer trains on them.

One module holds everything the training script and the loader must agree on: the attribute
vocabulary (:data:`ATTRIBUTES`), how an avatar is drawn from a seed (:func:`render_avatar`), the
condition encoder (:class:`AttributeConditioner`: one learned embedding per attribute value plus an
"unspecified" entry, summed into the UNet's class embedding) and the sampler
(:class:`AvatarPipeline`, DDIM with optional classifier-free guidance, batch ``[uncond; cond]``).

Labels are integers per attribute: ``0`` means *unspecified*, ``k + 1`` the k-th value of
:data:`ATTRIBUTES`. All attributes unspecified is the unconditional model.

Artwork licence: ``python-avatars`` is MIT; its artwork is Pablo Stanley's *Avataaars*
(https://avataaars.com, "free for personal and commercial use"), which allows shipping weights
trained on renders of it. See ``docs/image.md``.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# The avatar SVG is 264 x 280; this square holds the head and shoulders.
_CROP = (32.0, 8.0, 232.0, 208.0)

BACKGROUNDS = {"blue": "#65C9FF", "green": "#8BD17C", "orange": "#F4A261", "pink": "#F28DB2"}

# attribute -> value -> python-avatars member names (looked up lazily: the package is optional).
_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "glasses": {"none": ("NONE",), "glasses": ("ROUND", "PRESCRIPTION_2"), "sunglasses": ("SUNGLASSES",)},
    "mouth": {"smile": ("SMILE", "BIG_SMILE"), "neutral": ("SERIOUS",), "sad": ("SAD", "CONCERNED")},
    "background": {name: (name,) for name in BACKGROUNDS},
    "hair_colour": {"dark": ("BLACK", "BROWN_DARK", "BROWN"), "blonde": ("BLONDE", "BLONDE_GOLDEN"),
                    "red": ("AUBURN", "RED"), "light": ("PLATINUM", "SILVER_GRAY")},
    "skin": {"light": ("PALE", "LIGHT"), "medium": ("TANNED", "YELLOW", "BROWN"),
             "dark": ("DARK_BROWN", "BLACK")},
}
ATTRIBUTES: dict[str, tuple[str, ...]] = {name: tuple(values) for name, values in _VALUES.items()}
"""Attribute name -> its values, in label order (label ``k + 1`` is value ``k``; 0 = unspecified)."""

# How often each value is drawn (the rest uniform): half the faces wear nothing on the eyes.
_WEIGHTS = {"glasses": (2.0, 1.0, 1.0)}
_EYES = ("DEFAULT", "HAPPY", "SIDE", "SQUINT", "CLOSED", "SURPRISED")
_EYEBROWS = ("DEFAULT", "DEFAULT_NATURAL", "FLAT_NATURAL", "RAISED_EXCITED", "UP_DOWN", "SAD_CONCERNED")
_HATLESS_EXCLUDE = ("NONE", "HAT", "ASTRONAUT", "BRIDE")


def _pa() -> Any:
    try:
        import python_avatars
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("drawing avatars needs python-avatars and resvg-py: "
                          "pip install 'polysteer[avatars]'") from err
    return python_avatars


def sample_labels(rng: random.Random) -> dict[str, str]:
    """One random value per attribute (the glasses weights favour no glasses)."""
    out = {}
    for name, values in ATTRIBUTES.items():
        weights = _WEIGHTS.get(name, (1.0,) * len(values))
        out[name] = rng.choices(values, weights=weights)[0]
    return out


def render_avatar(rng: random.Random, size: int = 32, labels: Mapping[str, str] | None = None
                  ) -> tuple[Any, dict[str, str]]:
    """Draw one avatar as a ``size`` x ``size`` RGB PIL image, and its attribute labels.

    Everything not in :data:`ATTRIBUTES` (hair style, eyes, eyebrows, clothes, beard) is random from
    ``rng``, so the same seed gives the same image.
    """
    pa = _pa()
    import resvg_py
    from PIL import Image

    labels = dict(labels) if labels is not None else sample_labels(rng)
    pick = _VALUES
    accessory = getattr(pa.AccessoryType, rng.choice(pick["glasses"][labels["glasses"]]))
    mouth = getattr(pa.MouthType, rng.choice(pick["mouth"][labels["mouth"]]))
    hair = getattr(pa.HairColor, rng.choice(pick["hair_colour"][labels["hair_colour"]]))
    skin = getattr(pa.SkinColor, rng.choice(pick["skin"][labels["skin"]]))
    tops = [t for t in pa.HairType if t.name not in _HATLESS_EXCLUDE]
    beard = pa.FacialHairType.NONE if rng.random() < 0.7 else rng.choice(list(pa.FacialHairType)[1:])
    avatar = pa.Avatar(
        style=pa.AvatarStyle.TRANSPARENT, top=rng.choice(tops),
        eyebrows=getattr(pa.EyebrowType, rng.choice(_EYEBROWS)), eyes=getattr(pa.EyeType, rng.choice(_EYES)),
        nose=rng.choice(list(pa.NoseType)), mouth=mouth, facial_hair=beard, skin_color=skin,
        hair_color=hair, facial_hair_color=hair, accessory=accessory,
        clothing=rng.choice([c for c in pa.ClothingType if c.name != "NONE"]),
        clothing_color=rng.choice(list(pa.ClothingColor)), shirt_graphic=rng.choice(list(pa.ClothingGraphic)),
        hat_color=pa.ClothingColor.HEATHER, shirt_text="")
    zoom = 2.0 * size / (_CROP[2] - _CROP[0])  # render at twice the size, then downsample (anti-alias)
    png = resvg_py.svg_to_bytes(svg_string=avatar.render(), background=BACKGROUNDS[labels["background"]],
                                zoom=zoom)
    image = Image.open(io.BytesIO(bytes(png))).convert("RGB")
    box = tuple(c * zoom for c in _CROP)
    return image.resize((size, size), Image.Resampling.LANCZOS, box=box), labels


def render_pairs(count: int, positive: Mapping[str, str], negative: Mapping[str, str], size: int = 32,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` pairs of avatars identical except for the attributes in ``positive``/``negative``.

    Both sides draw every other part from the same random state, so each pair differs only where
    the labels do (the two values must be drawn from equally many python-avatars parts).
    """
    for name in positive:
        if len(_VALUES[name][positive[name]]) != len(_VALUES[name][negative[name]]):
            raise ValueError(f"{name}: {positive[name]!r} and {negative[name]!r} do not pair part by part")
    out = ([], [])
    for i in range(count):
        rng = random.Random(f"pair:{seed}:{i}")
        labels = sample_labels(rng)
        state = rng.getstate()
        for side, change in zip(out, (positive, negative), strict=True):
            rng.setstate(state)
            image, _ = render_avatar(rng, size, {**labels, **change})
            side.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
                        .view(size, size, 3).permute(2, 0, 1))
    return torch.stack(out[0]), torch.stack(out[1])


def label_ids(labels: Mapping[str, str | None],
              attributes: Mapping[str, Sequence[str]] = ATTRIBUTES) -> list[int]:
    """Integer labels in ``attributes`` order; a missing or ``None`` attribute is 0 (unspecified)."""
    unknown = set(labels) - set(attributes)
    if unknown:
        raise KeyError(f"unknown avatar attribute(s) {sorted(unknown)}; known: {sorted(attributes)}")
    ids = []
    for name, values in attributes.items():
        value = labels.get(name)
        if value is None:
            ids.append(0)
        elif value not in values:
            raise ValueError(f"avatar attribute {name!r} has no value {value!r}; choose one of {values}")
        else:
            ids.append(values.index(value) + 1)
    return ids


def condition_tensor(condition: Mapping[str, str | None] | Sequence[Mapping[str, str | None]] | None,
                     batch: int, attributes: Mapping[str, Sequence[str]] = ATTRIBUTES) -> torch.Tensor:
    """``(batch, n_attributes)`` long labels from one condition (repeated) or one per row."""
    if condition is None:
        condition = {}
    if isinstance(condition, Mapping):
        return torch.tensor([label_ids(condition, attributes)] * batch, dtype=torch.long)
    if len(condition) != batch:
        raise ValueError(f"got {len(condition)} conditions for a batch of {batch}")
    return torch.tensor([label_ids(c, attributes) for c in condition], dtype=torch.long)


def build_dataset(count: int, size: int = 32, seed: int = 0, progress: bool = True, start: int = 0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Avatars ``start .. start + count - 1`` as ``uint8 (N, 3, size, size)`` and their labels
    ``long (N, n_attributes)``.

    Image ``i`` depends only on ``(seed, i)``, so any slice of a larger dataset is the same.
    """
    from tqdm import tqdm

    images = torch.empty(count, 3, size, size, dtype=torch.uint8)
    labels = torch.empty(count, len(ATTRIBUTES), dtype=torch.long)
    for i in tqdm(range(count), desc="render avatars", disable=not progress, mininterval=2.0):
        image, names = render_avatar(random.Random(f"{seed}:{start + i}"), size)
        data = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        images[i] = data.view(size, size, 3).permute(2, 0, 1)
        labels[i] = torch.tensor(label_ids(names))
    return images, labels


class AttributeConditioner(nn.Module):
    """Sum of one learned embedding per attribute; entry 0 of each table is "unspecified"."""

    def __init__(self, dim: int, attributes: Mapping[str, Sequence[str]] | None = None) -> None:
        super().__init__()
        self.attributes = {k: tuple(v) for k, v in (attributes or ATTRIBUTES).items()}
        self.dim = dim
        self.tables = nn.ModuleDict({k: nn.Embedding(len(v) + 1, dim) for k, v in self.attributes.items()})
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.02)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        """``(B, n_attributes)`` long labels -> ``(B, dim)`` class embedding."""
        if labels.shape[-1] != len(self.tables):
            raise ValueError(f"labels have {labels.shape[-1]} attributes, the conditioner {len(self.tables)}")
        return sum(table(labels[:, i]) for i, table in enumerate(self.tables.values()))


def unet_config(size: int = 32) -> dict[str, Any]:
    """The shipped UNet2DModel shape: 4.6M parameters, attention at 8x8 and 4x4 (measured: the best
    quality per CPU step of the shapes tried at batch 32).

    The condition (time + attribute embedding) scales and shifts every ResNet block's normalised
    features ("scale_shift", as in ADM) instead of adding a bias before the norm: a much stronger path,
    so glasses, mouth and background follow the condition within a CPU-hour of training.
    """
    return dict(sample_size=size, in_channels=3, out_channels=3, layers_per_block=1,
                block_out_channels=(32, 64, 128, 128),
                down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                class_embed_type="identity", norm_num_groups=16, attention_head_dim=32,
                resnet_time_scale_shift="scale_shift")


def scheduler_config() -> dict[str, Any]:
    """The noise schedule shared by DDPM training and DDIM sampling.

    Cosine schedule (its last step is pure noise), v-prediction and "trailing" sampling steps, so
    sampling starts from pure noise as training saw it: with epsilon prediction and the default
    "leading" steps the first step sees some signal in the starting noise, and the noise, not the
    condition, decides the background colour and other global attributes.
    """
    return dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                timestep_spacing="trailing", clip_sample=True)


@dataclass
class AvatarPipeline:
    """Attribute-conditioned sampler: DDIM over the UNet, optional classifier-free guidance.

    With ``guidance_scale == 1`` (or no condition) the batch is the samples alone; otherwise it is
    ``[uncond; cond]`` (``RowMap.cfg`` order) and the two halves are combined after each step.
    """

    unet: Any
    conditioner: AttributeConditioner
    scheduler: Any
    do_classifier_free_guidance: bool = False

    @torch.no_grad()
    def __call__(self, batch_size: int = 1, condition: Any = None, *, num_inference_steps: int = 25,
                 guidance_scale: float = 1.0, generator: torch.Generator | None = None,
                 latents: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
        """Sample ``batch_size`` images, float ``(B, 3, H, W)`` in [0, 1]."""
        from tqdm import tqdm

        size = self.unet.config.sample_size
        dtype = next(self.unet.parameters()).dtype
        if latents is None:
            latents = torch.randn(batch_size, 3, size, size, generator=generator)
        x = latents.to(dtype)
        cond = condition_tensor(condition, batch_size, self.conditioner.attributes)
        guided = guidance_scale != 1.0 and bool(cond.any())
        self.do_classifier_free_guidance = guided  # read by the adapter's row map
        labels = torch.cat([torch.zeros_like(cond), cond]) if guided else cond
        emb = self.conditioner(labels).to(dtype)
        self.scheduler.set_timesteps(num_inference_steps)
        for t in tqdm(self.scheduler.timesteps, desc="denoise", disable=not progress):
            model_in = torch.cat([x, x]) if guided else x
            eps = self.unet(model_in, t, class_labels=emb).sample
            if guided:
                uncond, cond_eps = eps.chunk(2)
                eps = uncond + guidance_scale * (cond_eps - uncond)
            x = self.scheduler.step(eps.float(), t, x.float()).prev_sample.to(dtype)
        return (x.float().clamp(-1, 1) + 1) / 2


def save_avatar_pipeline(folder: Any, unet: Any, conditioner: AttributeConditioner,
                         manifest: Mapping[str, Any], dtype: torch.dtype = torch.float16) -> None:
    """Write a pipeline folder (diffusers layout plus ``conditioner/``) atomically.

    ``unet/`` and ``scheduler/`` load with plain diffusers; ``conditioner/`` holds the attribute
    embeddings and their vocabulary; ``manifest.json`` the provenance and sha256 of every weight file.
    """
    from pathlib import Path

    from polysteer.io import sha256_file, write_folder, write_json, write_tensors

    def write(tmp: Path) -> None:
        from diffusers import DDIMScheduler

        unet.to(dtype).save_pretrained(tmp / "unet", safe_serialization=True)
        unet.float()
        DDIMScheduler(**scheduler_config()).save_pretrained(tmp / "scheduler")
        vocab = [[k, list(v)] for k, v in conditioner.attributes.items()]  # a list keeps the order
        write_json(tmp / "conditioner" / "config.json", {"dim": conditioner.dim, "attributes": vocab})
        write_tensors(tmp / "conditioner" / "model.safetensors",
                      {k: v.to(dtype) for k, v in conditioner.state_dict().items()})
        write_json(tmp / "model_index.json", {
            "_class_name": "AvatarPipeline", "_diffusers_version": _diffusers_version(),
            "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDIMScheduler"],
            "conditioner": ["polysteer", "AttributeConditioner"]})
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        sums = {str(p.relative_to(tmp)): sha256_file(p) for p in files}
        write_json(tmp / "manifest.json", {**manifest, "files": sums})

    write_folder(Path(folder), write)


def load_avatar_pipeline(folder: Any, dtype: torch.dtype = torch.float32) -> AvatarPipeline:
    """Load a folder written by :func:`save_avatar_pipeline`."""
    from pathlib import Path

    from polysteer.io import read_folder

    return read_folder(Path(folder), lambda real: _load_pipeline_files(real, dtype))


def _load_pipeline_files(folder: Any, dtype: Any) -> AvatarPipeline:
    """The pipeline from one version of its cache folder (a reinstall never mixes in)."""
    from diffusers import DDIMScheduler, UNet2DModel

    from polysteer.io import read_json, read_tensors

    unet = UNet2DModel.from_pretrained(folder / "unet", dtype=dtype).eval()
    cfg = read_json(folder / "conditioner" / "config.json")
    conditioner = AttributeConditioner(cfg["dim"], dict(cfg["attributes"]))  # [[name, values], ...]
    state = read_tensors(folder / "conditioner" / "model.safetensors")
    conditioner.load_state_dict({k: v.float() for k, v in state.items()})
    scheduler = DDIMScheduler.from_pretrained(folder / "scheduler")
    return AvatarPipeline(unet, conditioner.to(dtype).eval(), scheduler)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


# How a description (a story, a prompt) names the attributes of the person it is about. Only what
# a text says about someone's looks: hair colour and eyewear, and the place as the background.
# The mouth (the expression) and the skin are never read from text: the expression is left to
# the style that steers the portrait, and skin is not guessed from words.
_DESCRIBED: tuple[tuple[str, str, str], ...] = (
    ("glasses", "sunglasses", r"\bsun-?glasses\b|\bshades\b"),
    ("glasses", "glasses", r"\b(?<!sun)(?<!sun-)(eye)?glasses\b|\bspectacles\b"),
    ("hair_colour", "red", r"\b(red|ginger|auburn|copper)[- ](haired|hair)\b|\bredhead|\bginger\b"),
    ("hair_colour", "blonde", r"\bblonde?\b|\b(golden|fair|yellow)[- ](haired|hair)\b"),
    ("hair_colour", "dark", r"\b(dark|black|brown|chestnut)[- ](haired|hair)\b|\bbrunette\b"),
    ("hair_colour", "light", r"\b(grey|gray|silver|white)[- ](haired|hair)\b"),
    ("background", "blue", r"\b(sea|ocean|sky|lake|river|beach|rain)\b"),
    ("background", "green", r"\b(forest|garden|park|meadow|field|woods|grass)\b"),
    ("background", "orange", r"\b(sunset|autumn|desert|fire|sunrise)\b"),
    ("background", "pink", r"\b(blossom|roses|pink)\b"),
)


def condition_from_text(text: str) -> dict[str, str]:
    """The avatar condition a description implies: for each attribute the value whose words come
    first in ``text`` (hair colour, glasses, and a background from the setting); attributes the
    text does not mention stay unspecified (the model's choice). The mouth is never set."""
    import re

    found: dict[str, tuple[int, str]] = {}
    lowered = text.lower()
    for name, value, pattern in _DESCRIBED:
        match = re.search(pattern, lowered)
        if match and (name not in found or match.start() < found[name][0]):
            found[name] = (match.start(), value)
    return {name: value for name, (_, value) in found.items()}
