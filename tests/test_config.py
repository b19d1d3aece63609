"""Config composition: fixed order, errors with full key paths, plugin schemas."""

from pathlib import Path

import pytest

from polysteer.config import compose
from polysteer.errors import ConfigError


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def configs(tmp_path):
    write(tmp_path, "config.yaml", "defaults:\n  model: small\nseed: 1\n")
    write(tmp_path, "model/small.yaml", "kind: reference\nn_layers: 2\nd_model: 16\n")
    write(tmp_path, "model/big.yaml", "kind: reference\nn_layers: 4\n")
    write(tmp_path, "experiment/sweep.yaml",
          "defaults:\n  model: big\nexperiment:\n  intensities: [0, 2]\nseed: 5\n")
    return tmp_path


def test_composition_order(plugin_manager, configs):
    cfg = compose([], root=configs).config
    assert (cfg.seed, cfg.model.n_layers, cfg.model.d_model) == (1, 2, 16)
    comp = compose(["experiment=sweep"], root=configs)
    # the experiment's defaults pick model=big; its body overrides config.yaml
    assert (comp.config.seed, comp.config.model.n_layers, comp.config.experiment.name) == (5, 4, "sweep")
    assert comp.config.model.d_model == 32, "schema defaults fill what the group file leaves out"
    assert comp.sources == ["structured defaults", "config.yaml", "model/big.yaml",
                            "experiment/sweep.yaml"]
    # command-line group choice beats the experiment's, key=value beats everything
    cfg = compose(["experiment=sweep", "model=small", "seed=9", "model.n_layers=3"], root=configs).config
    assert (cfg.seed, cfg.model.n_layers, cfg.model.d_model) == (9, 3, 16)


def test_unknown_key_names_its_path_and_the_allowed_keys(plugin_manager, configs):
    with pytest.raises(ConfigError, match=r"experiment\.intensitys.*allowed keys here: name, intensities"):
        compose(["experiment.intensitys=[1]"], root=configs)


def test_plugin_schema_checks_its_node(plugin_manager, configs):
    with pytest.raises(ConfigError, match=r"model\.n_layer.*model\.reference accepts: kind, vocab_size"):
        compose(["+model.n_layer=3"], root=configs)
    with pytest.raises(ConfigError, match=r"model\.n_layers.*(int|Value)"):
        compose(["model.n_layers=many"], root=configs)


def test_unknown_kind_and_group_choice_list_the_choices(plugin_manager, configs):
    with pytest.raises(ConfigError, match=r"model\.kind: unknown model adapter 'gpt9'. Choices: .*reference"):
        compose(["model.kind=gpt9"], root=configs)
    with pytest.raises(ConfigError, match=r"model=smal: .*Did you mean 'small'.*Choices: big, small"):
        compose(["model=smal"], root=configs)
    with pytest.raises(ConfigError, match="not a config group"):
        write(configs, "config.yaml", "defaults:\n  modle: small\n")
        compose([], root=configs)


def test_configs_never_name_classes(plugin_manager, configs):
    write(configs, "model/evil.yaml", "_target_: os.system\nkind: reference\n")
    with pytest.raises(ConfigError, match="_target_"):
        compose(["model=evil"], root=configs)


def test_shipped_configs_compose(plugin_manager):
    comp = compose(["experiment=reference-demo"])
    assert comp.config.style.name == "reference-demo"
    assert comp.config.model.kind == "reference"
