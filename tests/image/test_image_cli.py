"""``polysteer draw`` on a tiny random avatar pipeline saved as a folder."""

import pytest
import torch

pytest.importorskip("diffusers")
PIL = pytest.importorskip("PIL.Image")

from polysteer.cli import main  # noqa: E402
from polysteer.plugins.image.adapter import DiffusersAdapter  # noqa: E402
from polysteer.plugins.image.avatars import save_avatar_pipeline  # noqa: E402
from polysteer.plugins.image.measures import as_images  # noqa: E402
from polysteer.plugins.image.testing import tiny_avatar_pipeline  # noqa: E402
from polysteer.testing import probe_style  # noqa: E402


@pytest.fixture
def model_and_style(tmp_path, plugin_manager):
    pipe = tiny_avatar_pipeline()
    save_avatar_pipeline(tmp_path / "model", pipe.unet, pipe.conditioner, {"name": "tiny"},
                         dtype=torch.float32)
    adapter = DiffusersAdapter.load(str(tmp_path / "model"))
    style = probe_style(adapter, "mid", 1)
    style.components[0].dictionary.save(tmp_path / "probe-dict")
    (tmp_path / "probe.yaml").write_text(
        f"name: probe\ncomponents:\n  - dictionary: {tmp_path / 'probe-dict'}\n    feature: probe\n")
    return adapter, tmp_path


def _pixels(path):
    return as_images(PIL.open(path))


def test_compare_puts_unsteered_left_and_steered_right(model_and_style):
    adapter, tmp = model_and_style
    out = tmp / "cmp.png"
    assert main(["draw", "--model", str(tmp / "model"), "--style", str(tmp / "probe.yaml"),
                 "--intensity", "4", "--seed", "3", "--steps", "3", "--scale", "1", "--compare",
                 "-o", str(out)]) == 0
    picture = _pixels(out)
    assert picture.shape == (1, 3, 16, 33)
    plain = adapter.generate(1, seed=3, num_inference_steps=3).outputs
    left, right = picture[..., :16], picture[..., 17:]
    assert (left - plain).abs().max() <= 1 / 255 + 1e-6  # PNG rounding only
    assert (right - plain).abs().mean() > 0.01


def test_grid_sweeps_intensity_and_zero_column_is_plain(model_and_style):
    adapter, tmp = model_and_style
    out = tmp / "grid.png"
    assert main(["draw", "--model", str(tmp / "model"), "--style", str(tmp / "probe.yaml"),
                 "--intensity", "4", "--steps", "3", "--grid", "3", "--count", "2", "--scale", "2",
                 "-o", str(out)]) == 0
    picture = _pixels(out)
    assert picture.shape == (1, 3, 2 * 33, 2 * 50)  # 2 rows x 3 columns of 16 px, 1 px gaps, x2
    cells = picture[..., ::2, ::2]  # undo the x2 nearest upscale
    first = cells[..., :16, :16]
    assert (first - adapter.generate(1, seed=0, num_inference_steps=3).outputs).abs().max() <= 1 / 255 + 1e-6
    assert not torch.equal(cells[..., :16, 17:33], cells[..., :16, 34:50])


def test_compare_without_style_is_a_clear_error(model_and_style, capsys):
    _, tmp = model_and_style
    assert main(["draw", "--model", str(tmp / "model"), "--compare", "-o", str(tmp / "x.png")]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: --compare and --grid need --style") and "Pass --style" in line


def test_generate_on_the_pipeline_folder_matches_draw(model_and_style):
    _, tmp = model_and_style
    common = ["--style", str(tmp / "probe.yaml"), "--intensity", "4", "--seed", "3", "--steps", "3",
              "--compare", "--scale", "1"]
    assert main(["draw", "--model", str(tmp / "model"), *common, "-o", str(tmp / "a.png")]) == 0
    assert main(["generate", "--model", str(tmp / "model"), *common, "-o", str(tmp / "b.png")]) == 0
    assert torch.equal(_pixels(tmp / "a.png"), _pixels(tmp / "b.png"))


def test_bad_condition_is_one_error_line(model_and_style, capsys):
    _, tmp = model_and_style
    assert main(["generate", "--model", str(tmp / "model"), "--steps", "2", "glasses"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "ATTR=VALUE" in line and "glasses=sunglasses" in line
