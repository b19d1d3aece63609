"""The avatar training script is reproducible and resumable: 4 steps straight equal 2 + 2 resumed."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("python_avatars")
pytest.importorskip("resvg_py")

from polysteer.io.fileio import read_tensors  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_avatar_diffusion.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_avatar_diffusion", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(out: Path, steps: int) -> None:
    args = ["--out", str(out), "--images", "8", "--size", "16", "--batch", "2", "--max-steps", str(steps),
            "--sample-steps", "1", "--log-every", "1", "--checkpoint-minutes", "100"]
    assert _script().main(args) == 0


def test_resumed_run_equals_straight_run(tmp_path):
    _run(tmp_path / "a", 4)
    _run(tmp_path / "b", 2)
    _run(tmp_path / "b", 4)
    a = read_tensors(tmp_path / "a" / "checkpoint" / "state.safetensors")
    b = read_tensors(tmp_path / "b" / "checkpoint" / "state.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), "resuming changed the weights"
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    manifest = json.loads((tmp_path / "a" / "final" / "manifest.json").read_text())
    assert manifest["steps"] == 4 and "--max-steps 4" in manifest["reproduce"][-1]
    weights = {"unet/diffusion_pytorch_model.safetensors", "conditioner/model.safetensors"}
    assert set(manifest["files"]) >= weights
