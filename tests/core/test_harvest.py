"""Activation stores and the harvest driver, on synthetic rows and the reference model."""

from __future__ import annotations

import json

import pytest
import torch

from polysteer.errors import CorruptFileError
from polysteer.models.reference import ReferenceAdapter, reference_prompts
from polysteer.workflows.harvesting import ActivationStore, harvest, skip_first_position

SITES = ["blocks.0.resid_post", "blocks.1.mlp_out"]


def _rows(n: int, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) * 3


def _store(tmp_path, rows: torch.Tensor, per_item: int, shard_tokens: int) -> ActivationStore:
    store = ActivationStore.create(tmp_path / "acts", ["s"], rows.shape[1], shard_tokens=shard_tokens)
    for chunk in rows.split(per_item):
        store.add("s", chunk)
        store.commit(1)
    store.finish()
    return store


def test_round_trip_is_fp16_exact_and_counts_match(tmp_path):
    rows = _rows(25)
    store = _store(tmp_path, rows, per_item=5, shard_tokens=10)
    again = ActivationStore.open(tmp_path / "acts")
    assert again.done and again.items_done == 5 and again.n_tokens("s") == 25
    assert torch.equal(again.read_all("s"), rows.half().float())
    assert again.manifest["dtype"] == "float16"
    assert store.d_in == 8 and again.sites == ["s"]


def test_shards_close_at_item_boundaries_once_full(tmp_path):
    store = _store(tmp_path, _rows(30), per_item=4, shard_tokens=10)
    counts = [s["tokens"]["s"] for s in store.manifest["shards"]]
    assert counts == [12, 12, 6]  # never splits an item's rows between shards
    assert sorted(p.name for p in (tmp_path / "acts").iterdir()) == [
        "manifest.json", "shard-00000.safetensors", "shard-00001.safetensors",
        "shard-00002.safetensors"]


@pytest.mark.parametrize("seed", [None, 3])
def test_iter_batches_yields_every_row_once_across_shard_boundaries(tmp_path, seed):
    rows = _rows(30)
    store = _store(tmp_path, rows, per_item=4, shard_tokens=10)
    batches = list(store.iter_batches("s", 7, shuffle_seed=seed))
    assert [len(b) for b in batches] == [7, 7, 7, 7, 2]
    got = torch.cat(batches)
    expected = rows.half().float()
    if seed is None:
        assert torch.equal(got, expected)
    else:
        assert not torch.equal(got, expected)
        assert torch.equal(got[got[:, 0].argsort()], expected[expected[:, 0].argsort()])
        assert torch.equal(got, torch.cat(list(store.iter_batches("s", 7, shuffle_seed=seed))))
    assert sum(len(b) for b in store.iter_batches("s", 7, drop_last=True)) == 28


def test_uncommitted_rows_are_not_on_disk(tmp_path):
    store = ActivationStore.create(tmp_path / "acts", ["s"], 8, shard_tokens=4)
    store.add("s", _rows(6))  # no commit: an interruption here loses these rows and their item
    again = ActivationStore.open(tmp_path / "acts")
    assert again.items_done == 0 and again.n_tokens("s") == 0 and not again.done


def test_bad_rows_and_sites_are_errors(tmp_path):
    store = ActivationStore.create(tmp_path / "acts", ["s"], 8)
    with pytest.raises(ValueError, match=r"\(N, 8\)"):
        store.add("s", torch.zeros(3, 7))
    with pytest.raises(KeyError, match="not in this store"):
        store.add("t", torch.zeros(3, 8))
    with pytest.raises(FileExistsError):
        ActivationStore.create(tmp_path / "acts", ["s"], 8)


def test_corrupt_shard_is_a_corrupt_file_error(tmp_path):
    store = _store(tmp_path, _rows(20), per_item=5, shard_tokens=10)
    shard = tmp_path / "acts" / store.manifest["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="shard-00001"):
        store.read_all("s")
    shard.unlink()
    with pytest.raises(CorruptFileError, match="missing"):
        list(store.iter_batches("s", 4))


def test_manifest_disagreeing_with_a_shard_is_a_corrupt_file_error(tmp_path):
    _store(tmp_path, _rows(20), per_item=5, shard_tokens=10)
    path = tmp_path / "acts" / "manifest.json"
    data = json.loads(path.read_text())
    data["shards"][0]["tokens"]["s"] = 11
    path.write_text(json.dumps(data))
    with pytest.raises(CorruptFileError, match="manifest says"):
        ActivationStore.open(tmp_path / "acts").read_all("s")


@pytest.mark.parametrize("content", ["{not json", '{"format": "polysteer-activations"}', "[1, 2]",
                                     '{"format": "other"}'])
def test_corrupt_manifest_is_a_corrupt_file_error(tmp_path, content):
    _store(tmp_path, _rows(20), per_item=5, shard_tokens=10)
    (tmp_path / "acts" / "manifest.json").write_text(content)
    with pytest.raises(CorruptFileError, match="manifest.json"):
        ActivationStore.open(tmp_path / "acts")


# -- the driver on the reference model ---------------------------------------------------------
@pytest.fixture(scope="module")
def adapter() -> ReferenceAdapter:
    return ReferenceAdapter()


def _inputs(n: int = 10) -> list[list[torch.Tensor]]:
    prompts = reference_prompts(samples=n, length=7, seed=1)
    return [list(prompts[i:i + 3]) for i in range(0, n, 3)]  # batches of 3, 3, 3, 1


def _forward(adapter):
    return lambda batch: adapter.logits(torch.stack(list(batch)))


def test_harvest_stores_captured_rows_without_position_zero(tmp_path, adapter):
    store = harvest(adapter, _inputs(), SITES, tmp_path / "h", forward=_forward(adapter),
                    shard_tokens=20, progress=False)
    assert store.done and store.items_done == 10 and store.model.matches(adapter.model_fingerprint)
    with torch.no_grad():
        from polysteer.steering.runtime import steer
        with steer(adapter, None, capture=SITES) as run:
            adapter.logits(reference_prompts(samples=10, length=7, seed=1))
    for site in SITES:
        expected = skip_first_position(run.captured(site)).half().float()
        assert torch.allclose(store.read_all(site), expected, atol=1e-3)


def test_stopping_early_skips_later_layers_and_stores_the_same_rows(tmp_path, adapter):
    calls = []
    handle = adapter.model.unembed.register_forward_hook(lambda *_: calls.append(1))
    try:
        early = harvest(adapter, _inputs(), ["blocks.0.resid_post"], tmp_path / "a",
                        forward=_forward(adapter), progress=False)
        assert calls == []  # block 1 and the unembedding never ran
        full = harvest(adapter, _inputs(), ["blocks.0.resid_post"], tmp_path / "b",
                       forward=_forward(adapter), stop_early=False, progress=False)
        assert len(calls) == 4
    finally:
        handle.remove()
    assert torch.equal(early.read_all("blocks.0.resid_post"), full.read_all("blocks.0.resid_post"))


def test_interrupted_harvest_resumes_without_duplicated_or_lost_rows(tmp_path, adapter):
    reference = harvest(adapter, _inputs(), SITES, tmp_path / "ref", forward=_forward(adapter),
                        shard_tokens=20, progress=False)
    seen = []

    def flaky(batch):
        if len(seen) == 3:
            raise KeyboardInterrupt  # the user pressed ^C during the fourth batch
        seen.append(len(batch))
        return adapter.logits(torch.stack(list(batch)))

    with pytest.raises(KeyboardInterrupt):
        harvest(adapter, _inputs(), SITES, tmp_path / "run", forward=flaky, shard_tokens=20,
                stop_early=False, progress=False)
    partial = ActivationStore.open(tmp_path / "run")
    assert not partial.done and 0 < partial.items_done < 10
    fed = []
    resumed = harvest(adapter, _inputs(), SITES, tmp_path / "run",
                      forward=lambda b: (fed.append(len(b)), adapter.logits(torch.stack(list(b))))[1],
                      shard_tokens=20, progress=False)
    assert sum(fed) == 10 - partial.items_done  # consumed inputs were skipped
    for site in SITES:
        assert torch.equal(resumed.read_all(site), reference.read_all(site))


def test_resuming_for_other_sites_is_an_error(tmp_path, adapter):
    harvest(adapter, _inputs(4), SITES[:1], tmp_path / "h", forward=_forward(adapter), progress=False)
    with pytest.raises(ValueError, match="cannot be resumed"):
        harvest(adapter, _inputs(4), SITES, tmp_path / "h", forward=_forward(adapter), progress=False)
