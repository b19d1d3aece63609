"""Device and precision: ``--device``/``--dtype`` resolution, models loaded in bfloat16, and steering
that follows the model's dtype (the GPU half of these paths runs in scripts/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

from polysteer.errors import ConfigError
from polysteer.io import configs_dir
from polysteer.models import load_model
from polysteer.models.device import model_defaults, resolve_device, resolve_dtype
from polysteer.steering.style import Style


def test_device_resolution(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("polysteer.models.device._mps_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("CPU") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="MPS is not available"):
        resolve_device("mps")
    with pytest.raises(ConfigError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    # a machine with two GPUs, this process being torchrun's local rank 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", "cuda") == torch.float16  # older GPUs: fp16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_dtype("auto", "cuda") == torch.bfloat16


def test_dtype_resolution():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16") == resolve_dtype("bfloat16") == torch.bfloat16
    assert resolve_dtype("fp16") == resolve_dtype("torch.float16") == torch.float16
    with pytest.raises(ConfigError, match="unknown dtype 'int8'"):
        resolve_dtype("int8")


def test_bfloat16_model_steers_and_zero_intensity_is_identity():
    style = Style.load(configs_dir() / "style" / "reference-demo.yaml")
    with model_defaults("cpu", "bfloat16"):
        adapter = load_model("reference")
    assert next(adapter.model.parameters()).dtype == torch.bfloat16
    assert next(load_model("reference").model.parameters()).dtype == torch.float32  # scoped
    x = adapter.prepare_inputs(None)
    plain = adapter.generate(x, max_new_tokens=4).outputs
    assert torch.equal(adapter.generate(x, style=style, intensity=0.0, max_new_tokens=4).outputs, plain)
    steered = adapter.generate(x, style=style, intensity=2.0, max_new_tokens=4).outputs
    assert not torch.equal(steered, plain)  # the float32 dictionary acted on bfloat16 activations
    node = load_model({"kind": "reference", "dtype": "bfloat16"})  # a config node says it too
    assert next(node.model.parameters()).dtype == torch.bfloat16


def test_cli_device_and_dtype_options(capsys, plugin_manager):
    from polysteer.cli import main

    assert main(["generate", "--model", "reference", "--dtype", "bfloat16", "--style",
                 "reference-demo"]) == 0
    capsys.readouterr()
    if not torch.cuda.is_available():
        assert main(["generate", "--model", "reference", "--device", "cuda"]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err
    assert main(["generate", "--model", "reference", "--dtype", "int4"]) == 2
    assert "unknown dtype 'int4'" in capsys.readouterr().err


def test_sae_trains_on_the_configured_device():
    from polysteer.workflows import TrainConfig, train_sae

    rows = torch.randn(512, 8)
    sae, metrics = train_sae(rows, TrainConfig(d_features=16, k=2, batch_size=64, steps=5,
                                               device="auto", eval_tokens=128), progress=False)
    assert sae.W_enc.device.type == "cpu" and metrics["steps"] == 5  # back on the CPU to save


def test_environment_sets_the_default_device_and_dtype(monkeypatch):
    monkeypatch.setenv("POLYSTEER_DTYPE", "bfloat16")
    assert next(load_model("reference").model.parameters()).dtype == torch.bfloat16
    with model_defaults(dtype="float32"):  # the command line wins over the environment
        assert next(load_model("reference").model.parameters()).dtype == torch.float32


# -- on a GPU (scripts/gpu_check.sh runs these where one is lent) ---------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_gpu_half_precision_steering_follows_the_model(dtype):
    style = Style.load(configs_dir() / "style" / "reference-demo.yaml")
    adapter = load_model({"kind": "reference", "device": "cuda", "dtype": dtype})
    x = adapter.prepare_inputs(None)
    plain = adapter.generate(x, max_new_tokens=4).outputs
    assert plain.device.type == "cuda"
    assert torch.equal(adapter.generate(x, style=style, intensity=0.0, max_new_tokens=4).outputs, plain)
    steered = adapter.generate(x, style=style, intensity=2.0, max_new_tokens=4).outputs
    assert not torch.equal(steered, plain)


@cuda
def test_gpu_sae_training_matches_cpu_closely():
    from polysteer.workflows import TrainConfig, train_sae

    rows = torch.randn(2048, 16, generator=torch.Generator().manual_seed(0))
    cfg = dict(d_features=32, k=4, batch_size=256, steps=20, eval_tokens=512, resample=False)
    cpu, m_cpu = train_sae(rows, TrainConfig(**cfg, device="cpu"), progress=False)
    gpu, m_gpu = train_sae(rows, TrainConfig(**cfg, device="cuda"), progress=False)
    assert gpu.W_enc.device.type == "cpu"  # handed back on the CPU
    assert abs(m_cpu["fve"] - m_gpu["fve"]) < 0.02


def test_composed_model_nodes_leave_device_and_dtype_to_the_command_line(tmp_path):
    """A composed run config fills in schema defaults; device/dtype stay unset there, so
    ``polysteer run --dtype bfloat16`` reaches the model (also on remote workers)."""
    pytest.importorskip("transformers")
    from polysteer.config import compose, node_to_dict
    from polysteer.plugins.text.testing import tiny_text_adapter

    tiny = tiny_text_adapter("llama")
    tiny.model.save_pretrained(tmp_path / "tiny")
    tiny.tokenizer.save_pretrained(tmp_path / "tiny")
    args = ["model=null", "model.kind=transformers", f"model.name={tmp_path / 'tiny'}"]
    node = node_to_dict(compose(args).config.model)
    assert node["device"] is None and node["dtype"] is None
    with model_defaults(dtype="bfloat16"):
        assert next(load_model(node).model.parameters()).dtype == torch.bfloat16
    assert next(load_model(node).model.parameters()).dtype == torch.float32
