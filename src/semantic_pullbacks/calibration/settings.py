"""Settings files: temperatures and ascent parameters that ``explain``, ``evaluate`` and the app accept.

Format (JSON)::

    {"temperatures": {"relu": "2*std", "maxpool": 0.3, "attention": null},
     "ascent": {"steps": 5, "alpha": 20},
     "model": "efficientnet_lite0",
     "evidence": {...free-form: how these numbers were measured...}}

Every key but ``temperatures`` is optional; unknown keys are refused, so a typo never silently falls back to a
default.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Temperatures
from ..errors import InvalidInputError
from ..methods.configure import STEPPING_METHODS, temperatures_for

__all__ = ["STEPPING_METHODS", "AscentSettings", "Settings", "load_settings", "save_settings", "temperatures_for"]

_TOP_KEYS = {"temperatures", "ascent", "model", "evidence", "format"}
FORMAT = "semantic-pullbacks-settings/1"


@dataclass(frozen=True)
class AscentSettings:
    """K and alpha of pullback ascent, and optionally its own temperatures.

    Gates softened enough to make a single map most faithful can make the network so nearly linear that steps
    along the map stop raising the target; ``temperatures`` lets the stepping methods keep gates that still do.
    """

    steps: int = 5
    alpha: float | None = 20.0
    temperatures: Temperatures | None = None

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise InvalidInputError(f"ascent.steps must be a positive integer, got {self.steps!r}")
        if self.alpha is not None and (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, (int, float))
            or not math.isfinite(self.alpha)
            or self.alpha <= 0
        ):
            raise InvalidInputError(f"ascent.alpha must be a positive number or null, got {self.alpha!r}")


@dataclass(frozen=True)
class Settings:
    """Temperatures plus ascent parameters, with a record of where they came from."""

    temperatures: Temperatures = field(default_factory=Temperatures)
    ascent: AscentSettings = field(default_factory=AscentSettings)
    model: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model,
            "temperatures": self.temperatures.to_dict(),
            "ascent": {
                "steps": self.ascent.steps,
                "alpha": self.ascent.alpha,
                **({"temperatures": self.ascent.temperatures.to_dict()} if self.ascent.temperatures else {}),
            },
            "evidence": self.evidence,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "settings") -> Settings:
        if not isinstance(data, dict):
            raise InvalidInputError(f"{source}: expected a JSON object at the top level, got {type(data).__name__}")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise InvalidInputError(
                f"{source}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_TOP_KEYS))}"
            )
        temps = data.get("temperatures", {})
        if not isinstance(temps, dict):
            raise InvalidInputError(f"{source}: 'temperatures' must be an object of family -> value")
        try:
            temperatures = Temperatures.coerce(temps)
        except InvalidInputError as e:
            raise InvalidInputError(f"{source}: {e}") from None
        ascent = data.get("ascent", {})
        if not isinstance(ascent, dict) or set(ascent) - {"steps", "alpha", "temperatures"}:
            raise InvalidInputError(f"{source}: 'ascent' must be an object with 'steps', 'alpha' and/or 'temperatures'")
        try:
            ascent_temps = ascent.get("temperatures")
            if ascent_temps is not None and not isinstance(ascent_temps, dict):
                raise InvalidInputError("'ascent.temperatures' must be an object of family -> value")
            ascent_settings = AscentSettings(
                ascent.get("steps", 5),
                ascent.get("alpha", 20.0),
                Temperatures.coerce(ascent_temps) if ascent_temps is not None else None,
            )
        except InvalidInputError as e:
            raise InvalidInputError(f"{source}: {e}") from None
        model = data.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidInputError(f"{source}: 'model' must be a string or null")
        evidence = data.get("evidence", {})
        if not isinstance(evidence, dict):
            raise InvalidInputError(f"{source}: 'evidence' must be an object")
        return cls(temperatures, ascent_settings, model, evidence)


def load_settings(path: str | os.PathLike[str]) -> Settings:
    """Read and validate a settings file; every problem is reported with the file's name."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(
            f"settings file {str(p)!r} does not exist (write one with 'semantic-pullbacks calibrate')"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"settings file {str(p)!r} is not valid JSON: {e}") from None
    return Settings.from_dict(data, source=f"settings file {str(p)!r}")


def save_settings(settings: Settings, path: str | os.PathLike[str]) -> Path:
    """Write atomically, so an interrupted write never leaves a half file behind."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(settings.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p
