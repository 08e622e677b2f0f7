"""Temperatures that fit the model: settings files, per-family recommendations, and calibration."""

from .recommended import recommended_settings, recommended_table
from .search import DEFAULT_CANDIDATES, CalibrationResult, Trial, active_families, calibrate
from .settings import AscentSettings, Settings, load_settings, save_settings

__all__ = [
    "DEFAULT_CANDIDATES",
    "AscentSettings",
    "CalibrationResult",
    "Settings",
    "Trial",
    "active_families",
    "calibrate",
    "load_settings",
    "recommended_settings",
    "recommended_table",
    "save_settings",
]
