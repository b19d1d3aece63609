"""Image measures on synthetic images: each statistic moves the right way, inputs convert clearly."""

import pytest
import torch

import polysteer
from polysteer.plugins.image import measures as im


def _flat(r: float, g: float, b: float, size: int = 8) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


WHITE, GREY, BLACK = _flat(1, 1, 1), _flat(0.5, 0.5, 0.5), _flat(0, 0, 0)
RED, BLUE = _flat(1, 0, 0), _flat(0, 0, 1)


def _checkerboard(size: int = 8) -> torch.Tensor:
    board = ((torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2).float()
    return board.expand(1, 3, size, size).clone()


def test_brightness():
    assert im.brightness(WHITE).item() == pytest.approx(1.0)
    assert im.brightness(GREY).item() == pytest.approx(0.5)
    assert im.brightness(WHITE) > im.brightness(GREY) > im.brightness(BLACK)
    assert im.brightness(_flat(0, 1, 0)).item() == pytest.approx(0.7152)  # Rec. 709 green weight


def test_warmth():
    assert im.warmth(RED).item() == pytest.approx(1.0)
    assert im.warmth(BLUE).item() == pytest.approx(-1.0)
    assert im.warmth(GREY).item() == pytest.approx(0.0)


def test_saturation():
    assert im.saturation(GREY).item() == 0.0
    assert im.saturation(BLACK).item() == 0.0  # no division by zero
    assert im.saturation(RED).item() == pytest.approx(1.0)
    assert im.saturation(_flat(1.0, 0.5, 0.5)).item() == pytest.approx(0.5)


def test_contrast():
    assert im.contrast(GREY).item() == pytest.approx(0.0)
    assert im.contrast(_checkerboard()).item() == pytest.approx(0.5)
    assert im.contrast(_checkerboard()) > im.contrast(GREY)


def test_distance_to_baseline():
    batch = torch.cat([GREY, _checkerboard()])
    assert torch.equal(im.distance_to_baseline(batch, batch), torch.zeros(2))
    assert im.distance_to_baseline(WHITE, BLACK).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same batch, size and seed"):
        im.distance_to_baseline(WHITE, _flat(1, 1, 1, size=4))


def test_per_image_shapes_and_batch_wrappers():
    batch = torch.cat([WHITE, GREY, RED])
    for fn in (im.brightness, im.warmth, im.saturation, im.contrast):
        assert fn(batch).shape == (3,)
    images = polysteer.Generation(batch, "image")
    assert im.image_brightness(images, None) == pytest.approx(im.brightness(batch).mean().item())
    assert im.image_warmth(images, None) == pytest.approx(1 / 3)
    assert im.image_saturation(images, None) == pytest.approx(1 / 3)
    assert im.image_contrast(images, None) == pytest.approx(0.0)
    assert im.image_distance(images, images) == 0.0
    assert im.image_distance(images, polysteer.Generation(torch.cat([WHITE, WHITE, WHITE]), "image")) > 0
    with pytest.raises(ValueError, match="baseline"):
        im.image_distance(images, None)


def test_input_conversions():
    expected = im.brightness(GREY)
    assert im.as_images(GREY[0]).shape == (1, 3, 8, 8)  # (3, H, W)
    assert torch.allclose(im.brightness((GREY * 255).to(torch.uint8)), torch.tensor([127 / 255]))
    assert torch.allclose(im.brightness(GREY[:, :1]), expected)  # one channel -> grey RGB
    assert torch.allclose(im.brightness(GREY.double().numpy()), expected)
    assert im.as_images([GREY[0], WHITE]).shape == (2, 3, 8, 8)
    assert im.as_images(GREY).dtype == torch.float32


def test_pil_images():
    image_module = pytest.importorskip("PIL.Image")
    red = image_module.new("RGB", (5, 4), (255, 0, 0))
    x = im.as_images(red)
    assert x.shape == (1, 3, 4, 5)
    assert im.warmth(x).item() == pytest.approx(1.0)
    rgba = image_module.new("RGBA", (5, 4), (0, 0, 255, 128))
    assert im.as_images([red, rgba]).shape == (2, 3, 4, 5)
    assert im.warmth([red, rgba]).tolist() == pytest.approx([1.0, -1.0])


@pytest.mark.parametrize(("bad", "error", "match"), [
    (torch.rand(8, 8, 3), ValueError, "channels first"),
    (torch.rand(2, 4, 8, 8), ValueError, "channels first"),
    (torch.rand(8, 8), ValueError, "got shape"),
    (GREY * 2 - 1.5, ValueError, r"\(x \+ 1\) / 2"),
    (GREY * 255, ValueError, "x / 255"),
    (torch.ones(1, 3, 4, 4, dtype=torch.int64), TypeError, "uint8"),
    ([], ValueError, "empty"),
    ([WHITE, _flat(1, 1, 1, size=4)], ValueError, "share one size"),
])
def test_bad_inputs_are_clear_errors(bad, error, match):
    with pytest.raises(error, match=match):
        im.as_images(bad)


def test_registered_under_the_image_plugin():
    manager = polysteer.create_plugin_manager(load_entry_points=False)
    from polysteer.plugins.image.avatars import ATTRIBUTES

    names = {"image_brightness", "image_warmth", "image_saturation", "image_contrast", "image_distance"}
    names |= {f"avatar_{a}_{v}" for a, values in ATTRIBUTES.items() for v in values}  # classifier scores
    assert {e.name for e in manager.measures.by_plugin("image")} == names
    info = next(i for i in manager.plugins() if i.name == "image")
    assert info.ready and set(info.registered["measures"]) == names
    red = polysteer.Generation(RED, "image")
    assert manager.measures.get("image_warmth")(red, red) == pytest.approx(1.0)
