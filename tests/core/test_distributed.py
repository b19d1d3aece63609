"""Harvest and SAE training over several processes (torchrun, gloo on the CPU).

The in-process tests drive the per-rank logic with explicit :class:`DistInfo` values; the
torchrun test starts two real processes through ``python -m torch.distributed.run``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from polysteer.errors import ConfigError
from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.workflows import ActivationStore, DistInfo, harvest, harvest_sharded, split_sites
from polysteer.workflows.distributed import rank_block, rank_folder

SITES = ["blocks.0.resid_post", "blocks.1.resid_post"]


def test_rank_blocks_cover_every_batch_exactly_once():
    for n in range(0, 12):
        for world in (1, 2, 3, 5):
            blocks = [list(rank_block(n, r, world)) for r in range(world)]
            assert sum(blocks, []) == list(range(n))  # contiguous, in order, no gaps or repeats
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    assert split_sites(["a", "b", "c"], DistInfo(0, 2)) == ["a", "c"]
    assert split_sites(["a", "b", "c"], DistInfo(1, 2)) == ["b"]


def _batches(n: int = 10) -> list[list[torch.Tensor]]:
    prompts = reference_prompts(samples=n, length=7, seed=1)
    return [list(prompts[i:i + 2]) for i in range(0, n, 2)]


def test_sharded_harvest_resumes_per_rank_and_equals_one_process(tmp_path):
    adapter = ReferenceAdapter()
    batches = _batches()

    def run(forward=None, **kw):
        return harvest(adapter, kw.pop("batches"), SITES, kw.pop("folder"), shard_tokens=12,
                       forward=forward or (lambda b: adapter.logits(torch.stack(list(b)))),
                       stop_early=False, **kw)

    single = harvest_sharded(run, batches, tmp_path / "one", info=DistInfo(0, 1), progress=False)
    seen = []

    def flaky(batch):
        if len(seen) == 1:
            raise KeyboardInterrupt  # rank 1 is killed during its second batch
        seen.append(len(batch))
        return adapter.logits(torch.stack(list(batch)))

    folder = tmp_path / "two"
    with pytest.raises(KeyboardInterrupt):
        harvest_sharded(lambda **kw: run(flaky, **kw), batches, folder, info=DistInfo(1, 2),
                        progress=False)
    partial = ActivationStore.open(rank_folder(folder, 1, 2))
    assert not partial.done and partial.items_done == 2
    fed = []

    def counting(batch):
        fed.append(len(batch))
        return adapter.logits(torch.stack(list(batch)))

    harvest_sharded(lambda **kw: run(counting, **kw), batches, folder, info=DistInfo(1, 2),
                    progress=False)
    assert sum(fed) == 4 - partial.items_done  # rank 1 owns batches 3 and 4: only the rest ran
    with pytest.raises(ConfigError, match="another number of processes"):
        harvest_sharded(run, batches, folder, info=DistInfo(0, 3), progress=False)
    with pytest.raises(ConfigError, match="unfinished harvest of several processes"):
        harvest_sharded(run, batches, folder, info=DistInfo(0, 1), progress=False)
    merged = harvest_sharded(run, batches, folder, info=DistInfo(0, 2), progress=False)
    assert merged.done and merged.items_done == single.items_done == 10
    assert merged.manifest["details"]["world"] == 2
    for site in SITES:
        assert torch.equal(merged.read_all(site), single.read_all(site))
    reopened = ActivationStore.open(folder)  # the published manifest is a plain store
    assert reopened.n_tokens(SITES[0]) == single.n_tokens(SITES[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "polysteer", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture
def tiny_setup(tmp_path):
    """A tiny random llama saved as a folder, a corpus and a dictionary config for it."""
    pytest.importorskip("transformers")
    from polysteer.plugins.text.testing import WORDS, tiny_text_adapter

    adapter = tiny_text_adapter("llama")
    adapter.model.save_pretrained(tmp_path / "tiny")
    adapter.tokenizer.save_pretrained(tmp_path / "tiny")
    g = torch.Generator().manual_seed(4)
    texts = [" ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (int(n),), generator=g))
             for n in torch.randint(3, 12, (120,), generator=g)]
    (tmp_path / "corpus.txt").write_text("\n".join(texts) + "\n")
    config = {"name": "t", "site": SITES[1], "model": str(tmp_path / "tiny"), "save_dtype": "float32",
              "data": {"datasets": [str(tmp_path / "corpus.txt")], "min_chars": 1, "eval_texts": 4},
              "harvest": {"batch_size": 8, "shard_tokens": 100},
              "train": {"d_features": 32, "k": 4, "batch_size": 64, "steps": STEPS, "lr": LR,
                        "eval_tokens": 512, "resample": False}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(config))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "POLYSTEER_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    return tmp_path, path, env


STEPS, LR = 30, 1e-3


def test_torchrun_two_processes_match_one_process(tiny_setup):
    """2 processes: the same store (rows and order) and an SAE within Adam's step bound of the
    1-process SAE on the same data and seed."""
    from polysteer.cli import main
    from polysteer.features.dictionary import load_dictionary

    tmp_path, path, env = tiny_setup
    steps, lr = STEPS, LR
    two = [f"harvest.folder={tmp_path / 'acts2'}", f"output={tmp_path / 'sae2'}"]
    out = _torchrun(["dictionary", "train", str(path), *two], env).stdout
    assert "saved to" in out and out.count("saved to") == 1  # rank 0 saves, rank 1 does not
    assert main(["dictionary", "train", str(path), f"harvest.folder={tmp_path / 'acts1'}",
                 f"output={tmp_path / 'sae1'}"]) == 0
    one_store, two_store = (ActivationStore.open(tmp_path / n) for n in ("acts1", "acts2"))
    assert sorted((tmp_path / "acts2" / "ranks").iterdir())[0].name == "rank-00000-of-00002"
    assert torch.equal(two_store.read_all(SITES[1]), one_store.read_all(SITES[1]))
    one, two_sae = load_dictionary(tmp_path / "sae1"), load_dictionary(tmp_path / "sae2")
    # Adam moves a weight by at most ~lr per step, so float summation order (the only difference
    # between the runs) can part them by at most steps * lr; in practice far less
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        diff = (getattr(one, name) - getattr(two_sae, name)).abs().max().item()
        assert diff <= steps * lr, (name, diff)
    cos = torch.nn.functional.cosine_similarity(one.W_dec, two_sae.W_dec, dim=1)
    assert cos.mean() > 0.99, cos.mean()
    fve = [d.info.details["metrics"]["fve"] for d in (one, two_sae)]
    assert abs(fve[0] - fve[1]) < 0.02, fve
    assert two_sae.info.details["processes"] == 2


def test_torchrun_streaming_trains_without_a_store(tiny_setup):
    """Streaming mode under torchrun: each rank runs its part of the corpus, nothing is stored."""
    from polysteer.features.dictionary import load_dictionary

    tmp_path, path, env = tiny_setup
    stream = [f"harvest.folder={tmp_path / 'nostore'}", f"output={tmp_path / 'sae3'}",
              "harvest.stream=true", "harvest.buffer_rows=128"]
    _torchrun(["dictionary", "train", str(path), *stream], env)
    assert not (tmp_path / "nostore").exists()
    streamed = load_dictionary(tmp_path / "sae3")
    assert streamed.info.details["harvest"]["tokens"] == "streamed"
    assert streamed.info.details["metrics"]["fve"] > 0.2


def test_several_sites_train_one_sae_each(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from polysteer.features.dictionary import load_dictionary
    from polysteer.plugins.text.dictionary import parse_config, train_sites_from_config
    from polysteer.plugins.text.testing import WORDS, tiny_text_adapter

    adapter = tiny_text_adapter("llama")
    (tmp_path / "c.txt").write_text("\n".join(" ".join(WORDS[(i * 7 + j) % len(WORDS)]
                                                       for j in range(6)) for i in range(60)))
    raw = {"name": "t", "sites": SITES, "data": {"datasets": [str(tmp_path / "c.txt")],
                                                  "min_chars": 1, "eval_texts": 0},
           "harvest": {"folder": str(tmp_path / "acts")}, "output": str(tmp_path / "out"),
           "train": {"d_features": 16, "k": 4, "batch_size": 32, "steps": 10, "eval_tokens": 128}}
    cfg = parse_config(raw)
    assert cfg.site == SITES[0] and cfg.all_sites() == SITES
    trained = train_sites_from_config(cfg, adapter, progress=False)
    assert [t[0] for t in trained] == SITES  # one process trains every site
    assert ActivationStore.open(tmp_path / "acts").sites == SITES  # one store holds both
    for site in SITES:
        assert load_dictionary(tmp_path / "out" / site).info.site == site

    # under torchrun, rank 1 of 2 trains only its share of the sites (sites[1::2])
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    spread = parse_config({**raw, "harvest": {"folder": str(tmp_path / "acts2")},
                           "output": str(tmp_path / "out2")})
    assert [t[0] for t in train_sites_from_config(spread, adapter, progress=False)] == SITES[1:]
    assert (tmp_path / "out2" / SITES[1]).is_dir() and not (tmp_path / "out2" / SITES[0]).exists()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_torchrun_nccl_on_two_gpus(tiny_setup):
    """The same command on two GPUs (NCCL): trains, and rank 0 saves one SAE."""
    from polysteer.features.dictionary import load_dictionary

    tmp_path, path, env = tiny_setup
    out = _torchrun(["dictionary", "train", str(path), f"harvest.folder={tmp_path / 'acts'}",
                     f"output={tmp_path / 'sae'}", "--device", "cuda"], env).stdout
    assert out.count("saved to") == 1
    assert load_dictionary(tmp_path / "sae").info.details["processes"] == 2
