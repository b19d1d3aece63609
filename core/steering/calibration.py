"""Calibrations: what intensity 1.0 of a style means on one model, measured.

``polysteer calibrate STYLE --model M`` (:func:`polysteer.workflows.calibrate`) sweeps a style's raw
intensity on held-out inputs, measures the concept score and a coherence signal at each point, and
stores a :class:`Calibration`: ``high``, the strongest raw intensity whose outputs stay within the
coherence ``bound``, and ``low``, the weakest raw intensity where the concept has visibly risen.

**At steer time** a calibrated style's intensity is multiplied by ``high`` whenever a calibration for
the style's name *and* the model's fingerprint is found, so intensity 1.0 means "the strongest
setting that stays coherent" and 0.7 means 70% of it. Styles without a calibration for that model
are unchanged; zero intensity stays bit-identical to no steering (the factor multiplies a zero).
Styles made by adding two styles (``a + b``, named ``a+b``) have no calibration unless one is made
for that sum; scaling (``0.7 * style``) keeps the name and so the calibration.

**Where calibrations are looked up**, first found wins:

1. ``$POLYSTEER_HOME/calibrations/<style>/<model>@<arch>.json`` (written by ``polysteer calibrate``);
2. ``calibrations/<style>/<model>@<arch>.json`` next to the style's YAML file (``style.base_dir``);
3. the calibrations polysteer ships (``polysteer/shipped/calibrations/``), for shipped styles.

A file found for the same model name whose fingerprint does not match the model is ignored (another
checkpoint). ``POLYSTEER_CALIBRATION=off`` (or :func:`raw_intensities`) turns the lookup off, which
is how the sweep itself measures raw intensities.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from polysteer.errors import CorruptFileError
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.io.fileio import write_json
from polysteer.io.paths import home
from polysteer.io.safeload import load_json

FORMAT = "polysteer-calibration/1"
SHIPPED = Path(__file__).resolve().parent.parent / "shipped" / "calibrations"

_RAW: contextvars.ContextVar[bool] = contextvars.ContextVar("polysteer_raw_intensities", default=False)


@dataclass
class Calibration:
    """A style's measured intensity range on one model (raw intensities: before calibration).

    Attributes:
        style: the style's name.
        model: the fingerprint of the model it was measured on.
        modality: ``text``, ``image`` or ``voice``.
        high: the strongest raw intensity of the grid whose outputs stayed coherent (calibrated 1.0).
        low: the weakest raw intensity where the concept score had risen by half of its rise up to
            ``high`` (``None`` when it never rose).
        bound: the coherence bound the points were held to (in the units of ``coherence``).
        coherence: what the coherence value is (e.g. ``perplexity ratio``), lower is better.
        score: what the concept score is (e.g. ``judge P(concept)``), higher is more concept.
        points: every grid point: ``intensity``, ``score``, ``coherence``, ``coherent`` and the
            judge's other measures.
        coherent: False when no grid point above zero stayed coherent (``high`` is then the weakest
            grid point and steering at 1.0 is already past the bound).
        details: the judge, the inputs, the grid, the time.
    """

    style: str
    model: ModelFingerprint
    modality: str
    high: float
    low: float | None
    bound: float
    coherence: str
    score: str
    points: list[dict[str, Any]] = field(default_factory=list)
    coherent: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """What a calibrated intensity is multiplied by at steer time (``high``)."""
        return self.high

    def calibrated_low(self) -> float | None:
        """``low`` in calibrated units (``low / high``): where a slider's useful range starts."""
        return None if self.low is None or self.high == 0 else self.low / self.high

    def summary(self) -> dict[str, Any]:
        """The figures a UI needs: ``{"low", "high", "bound", "calibrated_low", "coherent", ...}``."""
        return {"style": self.style, "model": self.model.short(), "modality": self.modality,
                "low": self.low, "high": self.high, "calibrated_low": self.calibrated_low(),
                "bound": self.bound, "coherence": self.coherence, "score": self.score,
                "coherent": self.coherent}

    def to_json(self) -> dict[str, Any]:
        """Plain data for the JSON file."""
        data = asdict(self)
        data["model"] = self.model.to_json()
        return {"format": FORMAT, **data}

    @staticmethod
    def from_json(data: Any, where: str = "calibration") -> Calibration:
        """Inverse of :meth:`to_json`; a malformed file raises :class:`CorruptFileError`."""
        try:
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            high = float(data["high"])
            low = None if data.get("low") is None else float(data["low"])
            if not math.isfinite(high) or high < 0 or (low is not None and not math.isfinite(low)):
                raise ValueError("high and low must be finite, high >= 0")
            return Calibration(
                style=str(data["style"]), model=ModelFingerprint.from_json(data["model"]),
                modality=str(data["modality"]), high=high, low=low, bound=float(data["bound"]),
                coherence=str(data["coherence"]), score=str(data["score"]),
                points=list(data.get("points", [])), coherent=bool(data.get("coherent", True)),
                details=dict(data.get("details", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise CorruptFileError(f"{where}: not a polysteer calibration ({err}); recreate it with "
                                   "`polysteer calibrate STYLE --model MODEL`") from None

    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Write the calibration as JSON, atomically (default: under ``$POLYSTEER_HOME``)."""
        path = Path(path) if path is not None else user_calibration_path(self.style, self.model)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_json())
        return path


def _file_name(model: ModelFingerprint) -> str:
    return f"{model.short().replace('/', '_')}.json"


def user_calibration_path(style: str, model: ModelFingerprint) -> Path:
    """Where ``polysteer calibrate`` writes: ``$POLYSTEER_HOME/calibrations/<style>/<model>.json``."""
    return home() / "calibrations" / style / _file_name(model)


def calibration_folders(base_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched, in order (see the module docs)."""
    folders = [home() / "calibrations"]
    if base_dir is not None:
        folders.append(Path(base_dir) / "calibrations")
    folders.append(SHIPPED)
    return folders


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Read one calibration file."""
    return Calibration.from_json(load_json(path), str(path))


def find_calibration(style: Any, model: ModelFingerprint | None,
                     base_dir: str | os.PathLike | None = None) -> Calibration | None:
    """The calibration of ``style`` (a :class:`~polysteer.steering.Style` or its name) for ``model``,
    or ``None``. Files for another checkpoint of the same model name are skipped."""
    if model is None:
        return None
    name = style if isinstance(style, str) else getattr(style, "name", None)
    if not name:
        return None
    if base_dir is None and not isinstance(style, str):
        base_dir = getattr(style, "base_dir", None)
    for folder in calibration_folders(base_dir):
        path = folder / name / _file_name(model)
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            continue
        found = _load_cached(str(path), mtime)
        if found.model.matches(model):
            return found
    return None


@functools.lru_cache(maxsize=256)
def _load_cached(path: str, mtime_ns: int) -> Calibration:
    """Every ``steer()`` looks its styles up (a served batch too): parse each file once per version."""
    return load_calibration(path)


def calibrations_enabled() -> bool:
    """Whether steer-time lookup is on (off inside :func:`raw_intensities` or with
    ``POLYSTEER_CALIBRATION=off``)."""
    return not _RAW.get() and os.environ.get("POLYSTEER_CALIBRATION", "on").lower() not in (
        "off", "0", "false", "no")


@contextlib.contextmanager
def raw_intensities() -> Iterator[None]:
    """Inside this block ``steer`` ignores calibrations (intensities are raw)."""
    token = _RAW.set(True)
    try:
        yield
    finally:
        _RAW.reset(token)


def calibrated_style(style: Any, model: ModelFingerprint | None) -> tuple[Any, Calibration | None]:
    """``(style to apply, calibration or None)``: the style scaled by its calibration for ``model``."""
    if not calibrations_enabled():
        return style, None
    found = find_calibration(style, model)
    if found is None or found.scale == 1.0:
        return style, found
    return style.scaled(found.scale), found


def calibration_summary(path: str | os.PathLike) -> dict[str, Any]:
    """A calibration file's :meth:`Calibration.summary` (for listing)."""
    return load_calibration(path).summary()


def dumps(calibration: Calibration) -> str:
    """The calibration as indented JSON text."""
    return json.dumps(calibration.to_json(), indent=2, sort_keys=True)
