"""Workflows written once for every modality: harvest, SAE training, experiments, the demo.

The names below are the declared surface plugins import (``from polysteer.workflows import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.workflows.audit import AuditReport, FeatureMove, MeasureMove, audit
from polysteer.workflows.calibrate import (
    GRID,
    CalibrationJudge,
    calibrate,
    calibration_for,
    judge_spec,
    make_judge,
    plot_calibration,
)
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
from polysteer.workflows.distributed import (
    ActivationStream,
    DistInfo,
    barrier,
    dist_info,
    harvest_sharded,
    init_distributed,
    shutdown_distributed,
    split_sites,
)
from polysteer.workflows.experiment import (
    check_run_name,
    in_run_folder,
    new_run_folder,
    run_experiment,
)
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
    render_batch,
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
from polysteer.workflows.launch import (
    Launcher,
    RayLauncher,
    SerialLauncher,
    launcher_from_config,
    open_launcher,
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
    "ActivationStream", "DistInfo", "barrier", "dist_info", "harvest_sharded", "init_distributed",
    "shutdown_distributed", "split_sites", "render_batch",
    "Launcher", "RayLauncher", "SerialLauncher", "launcher_from_config", "open_launcher",
    "check_run_name", "in_run_folder",
    "GRID", "CalibrationJudge", "calibrate", "calibration_for", "judge_spec", "make_judge",
    "plot_calibration",
    "AuditReport", "FeatureMove", "MeasureMove", "audit",
]
