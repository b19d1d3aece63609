"""The steering runtime: the adapter protocol, step clock, layouts, site tables, generation
records, interventions, schedules, styles and the ``steer()`` context.

The names below are the declared surface plugins import (``from polysteer.steering import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.steering.adapter import ModelAdapter
from polysteer.steering.calibration import (
    Calibration,
    calibrated_style,
    calibration_folders,
    find_calibration,
    load_calibration,
    raw_intensities,
    user_calibration_path,
)
from polysteer.steering.generation import Generation, token_lengths
from polysteer.steering.governor import CoherenceSignal, Governor, neutral_probes
from polysteer.steering.layout import BCHW, BCT, BPC, InTuple, Layout, MaybeTuple, layout_named
from polysteer.steering.runtime import Steering, SteeringWarning, steer
from polysteer.steering.schedules import mask_region
from polysteer.steering.sites import Site, SiteBinding, SiteTable, UnknownSiteError
from polysteer.steering.step import Phase, RowMap, Step, StepClock
from polysteer.steering.style import Component, Rule, Style, blend, load_style

__all__ = [
    "BCHW", "BCT", "BPC", "CoherenceSignal", "Component", "Governor", "Generation", "InTuple",
    "Layout", "MaybeTuple",
    "ModelAdapter", "Phase", "RowMap", "Rule", "Site", "SiteBinding", "SiteTable", "Steering",
    "SteeringWarning", "Step", "StepClock", "Style", "UnknownSiteError", "blend", "layout_named",
    "load_style", "mask_region", "neutral_probes", "steer", "token_lengths",
    "Calibration", "calibrated_style", "calibration_folders", "find_calibration", "load_calibration",
    "raw_intensities",
    "user_calibration_path",
]
