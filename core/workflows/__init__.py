"""Workflows written once for every modality: harvest, SAE training, experiments, the demo.

The names below are the declared surface plugins import (``from polysteer.workflows import
...``); the modules inside are core's own business and may change.

The names below are the declared surface plugins import (``from polysteer.workflows import
...``); the modules inside are core's own business and may change.

The names below are the declared surface plugins import (``from polysteer.workflows import
...``); the modules inside are core's own business and may change.

The names below are the declared surface plugins import (``from polysteer.workflows import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.workflows.audit import AuditReport, FeatureMove, MeasureMove, audit
from polysteer.workflows.concept_builder import (
    ConceptRecipe,
    batched,
    build_concept,
    contrast_concept,
    contrast_vector,
    probe_concept,
    probe_vector,
)
from polysteer.workflows.concepts_api import (
    concept,
    concept_site_table,
    default_concept_site,
    recommended_intensity,
)
from polysteer.workflows.create import CreateConfig, CreatedPart, Creation, create, seeded_generate
from polysteer.workflows.experiment import new_run_folder, run_experiment
from polysteer.workflows.from_example import (
    NEUTRAL_TEXTS,
    candidate_features,
    save_style_from_example,
    style_from_example,
)
from polysteer.workflows.harvesting import (
    STORE_MANIFEST,
    ActivationStore,
    Attribute,
    Harvested,
    Rendered,
    Rows,
    RowSelector,
    collect,
    harvest,
    renderer,
    row_selector,
)
from polysteer.workflows.label_effect import (
    Candidate,
    EffectMeasure,
    correlated_candidates,
    label_by_effect,
    measure_effects,
    probe_style,
)
from polysteer.workflows.sae_training import TrainConfig, loss_recovered, train_sae

__all__ = [
    "ActivationStore", "Attribute", "Candidate", "ConceptRecipe", "EffectMeasure", "Harvested",
    "Rendered", "RowSelector", "Rows", "STORE_MANIFEST", "TrainConfig", "batched", "build_concept",
    "collect", "contrast_concept", "contrast_vector", "correlated_candidates", "harvest",
    "label_by_effect", "loss_recovered", "measure_effects", "new_run_folder", "probe_concept",
    "probe_style", "probe_vector", "renderer", "row_selector", "run_experiment", "train_sae",
    "CreateConfig", "CreatedPart", "Creation", "create", "seeded_generate",
    "concept", "concept_site_table", "default_concept_site", "recommended_intensity",
    "NEUTRAL_TEXTS", "candidate_features", "save_style_from_example", "style_from_example",
    "AuditReport", "FeatureMove", "MeasureMove", "audit",
]
