"""The one site-table type: rows, resolve, the unknown-site error, the spelling summary, and the
ModelAdapter defaults built on it (and the older sites()/bind() way, which must keep working)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import polysteer as ps
from polysteer.models.reference import ReferenceAdapter
from polysteer.steering.sites import summarize_sites


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(2))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _table(owner: str = "two-layers") -> ps.SiteTable:
    rows = [(f"layers.{i}", ps.Site(f"layers.{i}", ps.BPC(), 4)) for i in range(2)]
    rows.append(("head.input", ps.Site("head", ps.BPC(), 4, hook="input", arg_name="input")))
    rows.append(("logits", ps.Site("", ps.BPC(), 3)))
    return ps.SiteTable(rows, owner=owner)


def test_rows_keep_forward_order_and_resolve_to_live_modules() -> None:
    model, table = TwoLayers(), _table()
    assert table.sites() == list(table) == ["layers.0", "layers.1", "head.input", "logits"]
    head = table.resolve(model, "head.input")
    assert isinstance(head, ps.SiteBinding) and head.module is model.head
    assert (head.hook, head.arg_index, head.arg_name, head.channels) == ("input", 0, "input", 4)
    assert table.resolve(model, "layers.1").module is model.layers[1]
    assert table.resolve(model, "logits").module is model  # "" is the model itself


def test_unknown_site_suggests_close_names_and_spells_the_valid_ones() -> None:
    with pytest.raises(ps.UnknownSiteError) as err:
        _table().resolve(TwoLayers(), "layers.3")
    assert str(err.value) == (
        "unknown site 'layers.3' in two-layers. Did you mean 'layers.0' or 'layers.1'? "
        "Its sites are layers.0..1, head.input, logits; `polysteer sites MODEL` lists them all")
    # one error type, catchable as what callers already catch
    assert isinstance(err.value, ps.SteeringError) and isinstance(err.value, KeyError)
    assert err.value.site == "layers.3"


def test_table_is_a_mapping() -> None:
    table = _table()
    assert "logits" in table and "nope" not in table and 3 not in table
    assert table.get("nope") is None and table["logits"].module == ""
    assert dict(table)["layers.0"] == ps.Site("layers.0", ps.BPC(), 4)


def test_a_path_the_model_lacks_says_the_table_does_not_fit() -> None:
    table = ps.SiteTable({"deep": ps.Site("layers.7", ps.BPC(), 4)}, owner="two-layers")
    with pytest.raises(ps.SteeringError, match="'layers.7'.*does not fit the model"):
        table.resolve(TwoLayers(), "deep")


def test_bad_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="appears twice"):
        ps.SiteTable([("a", ps.Site("x", ps.BPC(), 1)), ("a", ps.Site("y", ps.BPC(), 1))])
    with pytest.raises(TypeError, match="polysteer.Site"):
        ps.SiteTable({"a": ("x", ps.BPC(), 1)})
    with pytest.raises(ValueError, match="hook"):
        ps.Site("x", ps.BPC(), 1, hook="inputs")
    with pytest.raises(ValueError, match="channels"):
        ps.Site("x", ps.BPC(), 0)


@pytest.mark.parametrize(("names", "summary"), [
    ([f"blocks.{i}.{k}" for i in range(3) for k in ("resid_pre", "attn_out", "mlp_out", "resid_post")],
     "blocks.0..2.{resid_pre,attn_out,mlp_out,resid_post}"),
    (["down.0", "down.1.attn.0", "down.1", "mid.attn.0", "mid", "up.0.attn.0", "up.0.attn.1", "up.0", "up.1"],
     "down.0..1, down.1.attn.0, mid.attn.0, mid, up.0.attn.0..1, up.0..1"),
    # not a full grid (block 2 has one attention, block 1 two): listed name by name, never invented
    (["down.1.attn.0", "down.1.attn.1", "down.2.attn.0"], "down.1.attn.0, down.1.attn.1, down.2.attn.0"),
    (["flow.0", "flow.2", "decoder.input", "decoder.pre"], "flow.{0,2}, decoder.input, decoder.pre"),
    (["embed"], "embed"),
])
def test_summary_compresses_only_what_exists(names: list[str], summary: str) -> None:
    assert summarize_sites(names) == summary


class TableAdapter(ps.ModelAdapter):
    """The new way: only a site table."""

    def site_table(self) -> ps.SiteTable:
        return _table(self.name)

    def run_generation(self, inputs, **kwargs):
        return self.model(inputs)


class OldStyleAdapter(ps.ModelAdapter):
    """The way written before site tables: sites() and bind() by hand (third-party code)."""

    def sites(self):
        return ["head"]

    def bind(self, site):
        if site != "head":
            raise ps.SteeringError(f"unknown site {site!r}")
        return ps.SiteBinding(self.model.head, ps.BPC(), 3)

    def run_generation(self, inputs, **kwargs):
        return self.model(inputs)


def test_adapter_sites_and_bind_come_from_its_table() -> None:
    adapter = TableAdapter(TwoLayers(), "two-layers")
    assert adapter.sites() == _table().sites()
    assert adapter.bind("layers.0").module is adapter.model.layers[0]
    with pytest.raises(ps.UnknownSiteError, match="in two-layers. Did you mean 'logits'"):
        adapter.bind("logit")


def test_adapter_written_the_older_way_still_steers(plugin_manager) -> None:
    adapter = OldStyleAdapter(TwoLayers(), "old")
    x = torch.randn(2, 5, 4)
    with ps.steer(adapter, None, capture=["head"]) as run:
        adapter.generate(x)
    assert run.captured("head").shape == (2, 5, 3)


def test_an_adapter_without_sites_fails_when_built() -> None:
    class NoSites(ps.ModelAdapter):
        def run_generation(self, inputs, **kwargs):
            return inputs

    class OnlySites(NoSites):
        def sites(self):
            return ["x"]

    for cls in (NoSites, OnlySites):
        with pytest.raises(TypeError, match=r"must implement site_table\(\)"):
            cls(TwoLayers(), "broken")


# -- the one did-you-mean ---------------------------------------------------------------------------
def test_did_you_mean_formats_close_names_and_ignores_case() -> None:
    assert ps.did_you_mean("Joe", ["joe", "amy"]) == " Did you mean 'joe'?"
    assert ps.did_you_mean("ab", ["abc", "abd", "abe", "abf"], n=2).count("'") == 4
    assert ps.did_you_mean("layers.3", ["layers.0", "layers.1"]) == " Did you mean 'layers.0' or 'layers.1'?"
    assert ps.did_you_mean("zzz", ["abc"]) == ""
    assert ps.did_you_mean(3, []) == ""


def test_every_lookup_suggests_with_the_same_words(tmp_path, plugin_manager) -> None:
    """Registries, catalogues, configs, styles, feature labels and sites all say it one way."""
    from polysteer.config import compose
    from polysteer.plugin.registry import catalogue_entry

    errors = []
    for call in (
        lambda: plugin_manager.interventions.entry("clmap"),
        lambda: catalogue_entry({"joe": 1}, "jeo", "embedded voice", "or pass a folder"),
        lambda: compose(["model=referense"]),
        lambda: ps.Style.from_dict({"components": [{"dictionary": "d", "feature": 0, "wieght": 1}]}),
        lambda: ps.load_style("reference-dem"),
        lambda: ReferenceAdapter().bind("blocks.0.resid_psot"),
        lambda: ps.DirectionSet(torch.eye(2), ps.DictionaryInfo(None, "s", 1.0), ["formal", "casual"])
        .feature_index("fromal"),
    ):
        with pytest.raises(Exception) as err:  # noqa: B017 (each raises its own polysteer error)
            call()
        errors.append(str(err.value))
    expected = ["'clamp'", "'joe'", "'reference'", "'weight'", "'reference-demo'", "'blocks.0.resid_post'",
                "'formal'"]
    for message, name in zip(errors, expected, strict=True):
        assert re.search(rf"\. Did you mean {re.escape(name)}( or '[^']+'|, '[^']+')*\?", message), message
