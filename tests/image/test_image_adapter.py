"""Image adapter contracts beyond the conformance suite: the step comes from the timestep, sites are
(B, H*W, C) with a grid (region masks), CFG rows, loading pipeline folders, clear errors."""

import pytest
import torch

pytest.importorskip("diffusers")

import polysteer as ps  # noqa: E402
from polysteer.errors import CorruptFileError, PolysteerError, SteeringError  # noqa: E402
from polysteer.plugins.image.adapter import DiffusersAdapter, image_grid  # noqa: E402
from polysteer.plugins.image.testing import (  # noqa: E402
    tiny_avatar_pipeline,
    tiny_prompt_embeds,
    tiny_sd_pipeline,
    tiny_unet2d_pipeline,
)
from polysteer.testing import probe_style  # noqa: E402


class LateStartPipeline:
    """Runs only the last half of the schedule (as img2img with strength 0.5 does)."""

    def __init__(self, base):
        self.unet, self.scheduler = base.unet, base.scheduler

    def __call__(self, batch_size, generator, num_inference_steps, output_type="np"):
        self.scheduler.set_timesteps(num_inference_steps)
        x = torch.randn(batch_size, 3, 16, 16, generator=generator)
        for t in self.scheduler.timesteps[num_inference_steps // 2:]:
            x = self.scheduler.step(self.unet(x, t).sample, t, x).prev_sample
        return ((x.clamp(-1, 1) + 1) / 2)


def test_step_is_the_denoising_step_of_the_timestep_not_a_call_count(plugin_manager):
    adapter = DiffusersAdapter(LateStartPipeline(tiny_unet2d_pipeline()), "late")
    with ps.steer(adapter, None, capture=["mid"]) as run:
        adapter.generate(2, num_inference_steps=10)
    history = run.clock.history
    assert [s.index for s in history] == [5, 6, 7, 8, 9]
    assert [round(s.progress, 4) for s in history] == [round(i / 9, 4) for i in range(5, 10)]
    assert {s.phase for s in history} == {"denoise"}


def test_sites_are_cells_by_channels_with_a_grid(plugin_manager):
    adapter = DiffusersAdapter(tiny_unet2d_pipeline(), "tiny")
    assert adapter.sites() == ["down.0", "down.1.attn.0", "down.1", "mid.attn.0", "mid",
                               "up.0.attn.0", "up.0.attn.1", "up.0", "up.1"]
    with ps.steer(adapter, None, capture=["down.0", "mid", "up.1"]) as run:
        adapter.generate(2, num_inference_steps=3)
    # down.0 leaves at 8x8 (downsampled), the middle works at 8x8, up.1 returns to 16x16
    assert run.captured("down.0").shape == (3, 2, 64, 16)
    assert run.captured("mid").shape == (3, 2, 64, 32)
    assert run.captured("up.1").shape == (3, 2, 256, 16)


def test_region_mask_touches_only_its_cells(plugin_manager):
    adapter = DiffusersAdapter(tiny_unet2d_pipeline(), "tiny")
    site = "up.1"
    with ps.steer(adapter, None, capture=[site]) as plain:
        adapter.generate(2, num_inference_steps=2)
    style = probe_style(adapter, site, 2, positions={"kind": "region", "top": 0.0, "bottom": 0.5})
    with ps.steer(adapter, style, intensity=4.0, capture=[site]) as run:
        adapter.generate(2, num_inference_steps=2)
    before, after = plain.captured(site)[0], run.captured(site)[0]  # the first step: same inputs
    grid = after.view(2, 16, 16, -1)
    changed = (grid - before.view(2, 16, 16, -1)).abs().amax(dim=(0, 2, 3)) > 0
    assert changed[:8].all() and not changed[8:].any()


def test_cfg_rows_are_uncond_then_cond(plugin_manager):
    adapter = DiffusersAdapter(tiny_sd_pipeline(), "tiny-sd")
    with ps.steer(adapter, None, capture=["mid"]) as run:
        adapter.generate(tiny_prompt_embeds(2), num_inference_steps=2, height=16, width=16,
                         guidance_scale=4.0)
    rows = run.clock.history[0].rows
    assert rows.branch == ("uncond", "uncond", "cond", "cond")
    assert rows.sample.tolist() == [0, 1, 0, 1]
    with ps.steer(adapter, None, capture=["mid"]) as run:
        adapter.generate(tiny_prompt_embeds(2), num_inference_steps=2, height=16, width=16,
                         guidance_scale=1.0)
    assert run.clock.history[0].rows.branch == ("cond", "cond")


def test_same_seed_same_image_different_seed_different(plugin_manager):
    adapter = DiffusersAdapter(tiny_avatar_pipeline(), "tiny-avatar")
    a = adapter.generate(2, seed=3, num_inference_steps=3).outputs
    assert torch.equal(a, adapter.generate(2, seed=3, num_inference_steps=3).outputs)
    assert not torch.equal(a, adapter.generate(2, seed=4, num_inference_steps=3).outputs)
    assert a.shape == (2, 3, 16, 16) and 0.0 <= float(a.min()) and float(a.max()) <= 1.0


def test_unknown_site_names_close_matches(plugin_manager):
    adapter = DiffusersAdapter(tiny_unet2d_pipeline(), "tiny")
    with pytest.raises(SteeringError, match="Did you mean 'up.0'"):
        adapter.bind("up.00")
    # the valid spellings are summarised, so a wrong scheme (diffusers' own names) is clear
    with pytest.raises(SteeringError, match=r"sites are down\.0\.\.1, down\.1\.attn\.0, mid\.attn\.0, mid, "):
        adapter.bind("unet.mid_block")


def test_sd_folder_without_tokenizer_loads_and_runs(tmp_path, plugin_manager):
    tiny_sd_pipeline().save_pretrained(tmp_path / "sd")
    adapter = DiffusersAdapter.load(str(tmp_path / "sd"))
    out = adapter.generate(tiny_prompt_embeds(1), num_inference_steps=2, height=16, width=16).outputs
    assert out.shape == (1, 3, 16, 16)
    assert "down.0.attn.0" in adapter.sites()


def test_avatar_folder_round_trip_and_damage_is_detected(tmp_path, plugin_manager):
    from polysteer.plugins.image.avatars import save_avatar_pipeline

    pipe = tiny_avatar_pipeline()
    save_avatar_pipeline(tmp_path / "av", pipe.unet, pipe.conditioner, {"name": "tiny"}, dtype=torch.float32)
    loaded = DiffusersAdapter.load(str(tmp_path / "av"))
    want = DiffusersAdapter(pipe, "x").generate({"glasses": "sunglasses"}, num_inference_steps=3).outputs
    got = loaded.generate({"glasses": "sunglasses"}, num_inference_steps=3).outputs
    assert torch.allclose(want, got, atol=1e-6)
    weights = tmp_path / "av" / "conditioner" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CorruptFileError, match="damaged"):
        DiffusersAdapter.load(str(tmp_path / "av"))


def test_not_a_pipeline_folder_is_a_clear_error(tmp_path):
    with pytest.raises(PolysteerError, match="model_index.json"):
        DiffusersAdapter.load(str(tmp_path))


def test_image_grid_tiles_row_major():
    images = torch.zeros(3, 3, 2, 2)
    images[1] = 0.5
    grid = image_grid(images, columns=2, pad=1)
    assert grid.shape == (1, 3, 5, 5)
    assert float(grid[0, 0, 0, 3]) == 0.5 and float(grid[0, 0, 2, 0]) == 1.0
