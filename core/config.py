"""Run configs: omegaconf composition in a fixed order, with errors that name the key path.

Order: (1) the structured defaults below, (2) ``configs/config.yaml``, (3) one file per group
(``model``, ``style``, ...) chosen by ``group=name`` (``config.yaml``'s ``defaults`` and the
experiment's ``defaults`` give the starting choices), (4) ``configs/experiment/<name>.yaml``,
(5) ``key=value`` overrides, (6) each plugin's schema for the nodes it owns: a mapping node with a
``kind`` is checked against the schema registered as ``"<node>.<kind>"``. Configs name things by
registered kind, never by an importable class path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from polysteer.errors import ConfigError, did_you_mean
from polysteer.io.paths import configs_dir
from polysteer.io.safeload import check_finite_tree, finite, load_yaml, parse_yaml
from polysteer.plugin.manager import PluginManager, current_plugin_manager

GROUPS = ("model", "style", "dictionary", "launcher")
MAX_INTENSITY = 1000.0
"""Largest magnitude of a steering intensity (1.0 is a typical token's norm at the site; far larger
values overflow half-precision activations and give silent garbage)."""


@dataclass
class ExperimentConfig:
    """What ``polysteer run`` does: generate at each intensity and measure.

    The sweep is models x prompts x seeds x styles x intensities; an empty ``models``,
    ``styles``, ``seeds`` or ``prompts`` means the run's ``model``, ``style``, ``seed`` and
    ``inputs`` (see ``docs/configs.md``)."""

    name: str = "default"
    intensities: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    measures: Any = None  # a list for every model, or {modality: list}; None: [changed_fraction]
    inputs: Any = None
    generate: dict[str, Any] = field(default_factory=dict)
    models: list[Any] = field(default_factory=list)
    styles: list[Any] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    prompts: Any = None
    audit: Any = None  # true, or {intensity, top, dictionary}: a side-effect audit per model and style


@dataclass
class LauncherConfig:
    """Where ``polysteer run`` runs its cells: ``serial`` (this process) or ``ray`` (Ray actors,
    one model load per worker; see ``docs/scaling.md``). ``address``: a Ray cluster (``auto``,
    ``ray://head:10001``), else a local Ray with ``num_cpus``."""

    kind: str = "serial"
    address: str | None = None
    num_workers: int | None = None
    num_cpus: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0


@dataclass
class RootConfig:
    """The structured defaults every run starts from."""

    model: dict[str, Any] = field(default_factory=lambda: {"kind": "reference"})
    style: Any = None
    dictionary: Any = None
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    seed: int = 0
    output_dir: str = "runs"


@dataclass
class Composition:
    """A composed config and where its pieces came from."""

    config: DictConfig
    choices: dict[str, str | None]
    sources: list[str]
    root: Path = field(default_factory=configs_dir)

    def base_dir(self, group: str) -> Path:
        """Folder that relative paths inside a group's file resolve against."""
        return self.root / group


def _read_yaml(path: Path) -> dict:
    data = load_yaml(path, "config file") or {}  # regular UTF-8 file, alias/depth limits
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _choices_in(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _group_file(root: Path, group: str, name: str) -> Path:
    path = root / group / f"{name}.yaml"
    try:
        exists = "/" not in name and "\\" not in name and path.is_file()
    except (OSError, ValueError):  # a name too long or holding a NUL is no config's name
        exists = False
    if not exists:
        choices = _choices_in(root / group)
        raise ConfigError(f"{group}={name}: no such {group} config.{did_you_mean(name, choices)} Choices: "
                          f"{', '.join(choices) or 'none'}")
    return path


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as err:
        raise _config_error(err, source) from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, RecursionError) as err:
        raise ConfigError(f"{source}: {err} (a value has the wrong shape, e.g. a mapping where the "
                          "defaults have a list)") from None


def _apply_override(cfg: DictConfig, override: str) -> None:
    """Set one ``key=value`` (``a.b.0.c=1`` indexes into lists) with errors that name it."""
    key, raw = override.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{override!r}: expected key=value with a dotted key like "
                          "experiment.intensities=[0,1]")
    parse_yaml(raw, f"override {override!r}")  # alias bombs and deep nesting stop here
    try:
        value = OmegaConf.from_dotlist([f"value={raw}"])["value"]
        OmegaConf.update(cfg, key, value, merge=True)
    except OmegaConfBaseException as err:
        raise _config_error(err, "command line") from None
    except Exception as err:  # omegaconf's YAML and container errors, whatever their type
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{override!r}: {first} (from command line); check the key path and "
                          "give the value the shape the config has there") from None


def check_values(cfg: DictConfig) -> None:
    """Numbers a run uses, checked before anything runs: finite, and intensities in range."""
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise _config_error(err, "interpolation") from None
    check_finite_tree(data, "config")
    experiment = data.get("experiment") or {}
    intensities = experiment.get("intensities")
    if not isinstance(intensities, list) or not intensities:
        raise ConfigError("experiment.intensities: expected a list of numbers like [0, 0.5, 1]")
    for i, value in enumerate(intensities):
        finite(value, f"experiment.intensities[{i}]", low=-MAX_INTENSITY, high=MAX_INTENSITY)
    seed = data.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")


def _config_error(err: OmegaConfBaseException, source: str, prefix: str = "") -> ConfigError:
    key = getattr(err, "full_key", "") or ""
    key = f"{prefix}{key}" if key else prefix.rstrip(".")
    msg = str(err).splitlines()[0]
    schema = getattr(err, "object_type", None)
    allowed = ""
    if "not in" in msg and dataclasses.is_dataclass(schema):
        allowed = f"; allowed keys here: {', '.join(f.name for f in dataclasses.fields(schema))}"
    return ConfigError(f"{key or '<root>'}: {msg} (from {source}){allowed}")


def _split_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    groups, overrides = {}, []
    for arg in args:
        if "=" not in arg:
            raise ConfigError(f"{arg!r}: expected key=value (e.g. experiment.intensities=[0,0.5])")
        arg = arg.removeprefix("+")  # hydra's "add a key" prefix: plain overrides here
        key, value = arg.split("=", 1)
        if key in (*GROUPS, "experiment") and "." not in key:
            groups[key] = value
        else:
            overrides.append(arg)
    return groups, overrides


def compose(args: list[str] | None = None, *, root: Path | None = None,
            plugins: PluginManager | None = None) -> Composition:
    """Compose a run config from ``configs/`` and ``args`` (``group=name`` and ``key=value``)."""
    root = Path(root) if root else configs_dir()
    plugins = plugins or current_plugin_manager()
    chosen, overrides = _split_args(list(args or []))
    cfg = OmegaConf.structured(RootConfig)
    sources = ["structured defaults"]

    main = _read_yaml(root / "config.yaml") if (root / "config.yaml").exists() else {}
    choices: dict[str, str | None] = dict(main.pop("defaults", None) or {})
    if main:
        cfg = _merge(cfg, main, "config.yaml")
        sources.append("config.yaml")

    experiment_name = chosen.pop("experiment", None) or choices.pop("experiment", None)
    choices.pop("experiment", None)
    experiment: dict = {}
    if experiment_name:
        experiment = _read_yaml(_group_file(root, "experiment", experiment_name))
        choices.update(experiment.pop("defaults", None) or {})
    for group in chosen:
        if group not in GROUPS:
            raise ConfigError(f"{group}: not a config group; groups are {', '.join(GROUPS)}")
    choices.update(chosen)

    for group, name in choices.items():
        if group not in GROUPS:
            raise ConfigError(f"defaults.{group}: not a config group; groups are "
                              f"{', '.join(GROUPS)}")
        if name in (None, "null", "none"):
            continue
        data = _read_yaml(_group_file(root, group, str(name)))
        cfg = _merge(cfg, {group: data}, f"{group}/{name}.yaml")
        sources.append(f"{group}/{name}.yaml")
    if experiment_name:
        experiment.setdefault("experiment", {}).setdefault("name", experiment_name)
        cfg = _merge(cfg, experiment, f"experiment/{experiment_name}.yaml")
        sources.append(f"experiment/{experiment_name}.yaml")
    if overrides:
        for override in overrides:
            _apply_override(cfg, override)
        sources.append("command line")
    cfg = validate_plugin_nodes(cfg, plugins)
    check_values(cfg)
    return Composition(cfg, choices, sources, root)


def validate_plugin_nodes(cfg: DictConfig, plugins: PluginManager) -> DictConfig:
    """Check every ``{kind: ...}`` node against the schema its plugin registered."""
    for node in cfg:
        value = cfg[node]
        if not isinstance(value, DictConfig) or "kind" not in value:
            continue
        kind = value.kind
        if not isinstance(kind, str):
            raise ConfigError(f"{node}.kind: expected a registered kind name, got {kind!r}")
        owners = {"model": plugins.adapters}
        if node in owners and kind not in owners[node]:
            hint = did_you_mean(kind, owners[node].names())
            raise ConfigError(f"{node}.kind: unknown {owners[node].what} {kind!r}.{hint} Choices: "
                              f"{', '.join(owners[node].names())}")
        key = f"{node}.{kind}"
        if key not in plugins.config_schemas:
            continue
        schema = plugins.config_schemas.entry(key).value
        try:
            checked = OmegaConf.merge(OmegaConf.structured(schema), value)
        except OmegaConfBaseException as err:
            fields = [f.name for f in dataclasses.fields(schema)]
            error = _config_error(err, f"schema {key}", prefix=f"{node}.")
            raise ConfigError(f"{error}; {key} accepts: {', '.join(fields)}") from None
        with_kind = OmegaConf.to_container(checked)
        OmegaConf.set_struct(cfg, False)
        cfg[node] = with_kind
        OmegaConf.set_struct(cfg, True)
    return cfg


def node_to_dict(node: Any) -> Any:
    """A config node as plain Python data (``None`` stays ``None``)."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
