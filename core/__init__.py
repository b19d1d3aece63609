"""polysteer: read and steer what generative models think, in text, images and voice.

Quick tour::

    import polysteer as ps
    from polysteer.io.paths import configs_dir

    model = ps.load_model("reference")                       # any registered adapter kind
    style = ps.Style.load(configs_dir() / "style" / "reference-demo.yaml")
    with ps.steer(model, style, intensity=0.5):
        out = model.generate([[3, 7, 1, 12]], max_new_tokens=16)   # a polysteer.Generation
    print(out.generated[0].tolist())                         # the new token ids
"""

from polysteer.cli.main import Command
from polysteer.errors import (
    ConfigError,
    CorruptFileError,
    DictionaryMismatchError,
    MissingDependencyError,
    PolysteerError,
    RegistryError,
    SteeringError,
    did_you_mean,
)
from polysteer.features.classifier import FeatureClassifier, load_classifier, resolve_classifier
from polysteer.features.concepts import (
    difference_of_means,
    direction_set,
    linear_probe,
    median_norm,
    pca_of_differences,
)
from polysteer.features.dictionary import (
    DictionaryFormat,
    DictionaryInfo,
    DirectionSet,
    FeatureDictionary,
    SparseAutoencoder,
    load_dictionary,
)
from polysteer.features.fingerprint import ModelFingerprint, fingerprint
from polysteer.models.loading import load_model
from polysteer.plugin.manager import (
    PluginManager,
    create_plugin_manager,
    current_plugin_manager,
    hookimpl,
    use_plugin_manager,
)
from polysteer.plugin.registry import Registry, Requirement
from polysteer.steering.adapter import ModelAdapter
from polysteer.steering.calibration import Calibration, find_calibration
from polysteer.steering.generation import Generation
from polysteer.steering.governor import CoherenceSignal, Governor
from polysteer.steering.layout import BCHW, BCT, BPC, InTuple, Layout, MaybeTuple
from polysteer.steering.runtime import Steering, SteeringWarning, resolve_dictionary, steer
from polysteer.steering.sites import Site, SiteBinding, SiteTable, UnknownSiteError
from polysteer.steering.step import Phase, RowMap, Step, StepClock
from polysteer.steering.style import Component, Rule, Style, blend, load_style
from polysteer.workflows.audit import AuditReport, audit
from polysteer.workflows.calibrate import calibrate, calibration_for, plot_calibration
from polysteer.workflows.concept_builder import ConceptRecipe, build_concept
from polysteer.workflows.concepts_api import concept, default_concept_site, recommended_intensity
from polysteer.workflows.create import CreateConfig, Creation, create
from polysteer.workflows.from_example import style_from_example

__all__ = [
    "BCHW", "BCT", "BPC", "Command", "Component", "ConceptRecipe", "ConfigError",
    "CorruptFileError", "DictionaryFormat", "DictionaryInfo", "DictionaryMismatchError",
    "DirectionSet", "FeatureClassifier", "FeatureDictionary", "Generation", "InTuple", "Layout",
    "MaybeTuple", "MissingDependencyError", "ModelAdapter", "ModelFingerprint", "Phase",
    "PluginManager", "PolysteerError", "Registry", "RegistryError", "Requirement", "RowMap", "Rule",
    "Site", "SiteBinding", "SiteTable", "SparseAutoencoder", "Steering", "SteeringError",
    "SteeringWarning", "Step", "StepClock", "Style", "UnknownSiteError", "blend", "build_concept",
    "create_plugin_manager", "current_plugin_manager", "did_you_mean", "difference_of_means",
    "direction_set", "fingerprint", "hookimpl", "linear_probe", "load_classifier",
    "load_dictionary", "load_model", "load_style", "median_norm", "pca_of_differences",
    "resolve_classifier", "resolve_dictionary", "steer", "use_plugin_manager",
    "CreateConfig", "Creation", "create",
    "concept", "default_concept_site", "recommended_intensity",
    "style_from_example",
    "Calibration", "calibrate", "calibration_for", "find_calibration", "plot_calibration",
    "AuditReport", "CoherenceSignal", "Governor", "audit",
]
