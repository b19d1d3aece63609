"""Every built-in adapter (reference, text, image UNet and DiT, VITS, Whisper) describes its sites with
the one core SiteTable, binds through the one SiteTable.resolve, and refuses an unknown site with the
one UnknownSiteError, worded the same way on every modality."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

import polysteer as ps


def _reference() -> ps.ModelAdapter:
    from polysteer.models.reference import ReferenceAdapter

    return ReferenceAdapter()


def _text(family: str) -> Callable[[], ps.ModelAdapter]:
    def make() -> ps.ModelAdapter:
        pytest.importorskip("transformers")
        from polysteer.plugins.text.testing import tiny_text_adapter

        return tiny_text_adapter(family)
    return make


def _image(pipeline: str) -> Callable[[], ps.ModelAdapter]:
    def make() -> ps.ModelAdapter:
        pytest.importorskip("diffusers")
        from polysteer.plugins.image import testing
        from polysteer.plugins.image.adapter import DiffusersAdapter

        return DiffusersAdapter(getattr(testing, pipeline)(), pipeline)
    return make


def _vits() -> ps.ModelAdapter:
    pytest.importorskip("transformers")
    from polysteer.plugins.voice.testing import tiny_vits_adapter

    return tiny_vits_adapter()


def _whisper() -> ps.ModelAdapter:
    pytest.importorskip("transformers")
    from polysteer.plugins.voice.whisper_testing import tiny_whisper_adapter

    return tiny_whisper_adapter()


ADAPTERS: dict[str, Callable[[], ps.ModelAdapter]] = {
    "reference": _reference,
    "text-llama": _text("llama"),
    "text-gpt2": _text("gpt2"),
    "text-gpt_neox": _text("gpt_neox"),
    "image-unet": _image("tiny_unet2d_pipeline"),
    "image-sd": _image("tiny_sd_pipeline"),
    "image-dit": _image("tiny_dit_pipeline"),
    "voice-vits": _vits,
    "asr-whisper": _whisper,
}


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request: Any, plugin_manager: Any) -> ps.ModelAdapter:
    return ADAPTERS[request.param]()


def test_sites_come_from_the_table_and_bind_through_the_one_resolve(adapter, monkeypatch) -> None:
    table = adapter.site_table()
    assert isinstance(table, ps.SiteTable)
    assert adapter.sites() == table.sites() and len(table) > 0
    resolved: list[str] = []
    real_resolve = ps.SiteTable.resolve

    def spy(self: ps.SiteTable, model: Any, site: str) -> ps.SiteBinding:
        resolved.append(site)
        return real_resolve(self, model, site)

    monkeypatch.setattr(ps.SiteTable, "resolve", spy)
    for site in table.sites():
        binding = adapter.bind(site)
        row = table[site]
        module = adapter.model.get_submodule(row.module) if row.module else adapter.model
        assert binding.module is module, site
        assert (binding.layout, binding.channels, binding.hook, binding.arg_index, binding.arg_name) == (
            row.layout, row.channels, row.hook, row.arg_index, row.arg_name), site
    assert resolved == table.sites()


def test_an_unknown_site_is_the_same_error_on_every_modality(adapter) -> None:
    sites = adapter.sites()
    near = sites[len(sites) // 2]
    typo = near + "x"
    assert typo not in sites
    with pytest.raises(ps.UnknownSiteError) as err:
        adapter.bind(typo)
    message = str(err.value)
    shape = (rf"unknown site '{re.escape(typo)}' in [^.]+\. Did you mean [^?]*'{re.escape(near)}'[^?]*\? "
             r"Its sites are [^;]+; `polysteer sites MODEL` lists them all")
    assert re.fullmatch(shape, message), message
    # the summary names the first and the last site's index range, whatever the modality
    assert sites[0].split(".")[0] in message and sites[-1].split(".")[0] in message
