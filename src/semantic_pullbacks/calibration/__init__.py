"""Temperatures that fit the model: settings files, per-family recommendations, and calibration."""

from .objective import DEFAULT_CRITERIA, Criterion, Verdict, judge
from .recommended import recommended_settings, recommended_table
from .search import (
    CALIBRATION_METRIC_SETTINGS,
    DEFAULT_CANDIDATES,
    CalibrationResult,
    Candidate,
    Fold,
    active_families,
    calibrate,
    grid,
)
from .settings import AscentSettings, Settings, load_settings, save_settings
from .table import ScoreTable

__all__ = [
    "CALIBRATION_METRIC_SETTINGS",
    "DEFAULT_CANDIDATES",
    "DEFAULT_CRITERIA",
    "AscentSettings",
    "CalibrationResult",
    "Candidate",
    "Criterion",
    "Fold",
    "ScoreTable",
    "Settings",
    "Verdict",
    "active_families",
    "calibrate",
    "grid",
    "judge",
    "load_settings",
    "recommended_settings",
    "recommended_table",
    "save_settings",
]
