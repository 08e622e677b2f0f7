"""The soft-pullback engine: a torch-function mode, its rule registry, temperatures and coverage report."""

from . import rules as _rules  # noqa: F401  (registers the built-in rules)
from .context import PassContext
from .coverage import CoverageReport
from .families import FAMILIES
from .mode import PullbackSession, check_model_supported, pullback_mode, rules_suspended
from .registry import NOT_HANDLED, Rule, register_nonlinear, register_rule, registered_rules, rule_for, unregister_rule
from .temperatures import BySize, Relative, TemperatureLike, Temperatures

__all__ = [
    "FAMILIES",
    "NOT_HANDLED",
    "BySize",
    "CoverageReport",
    "PassContext",
    "PullbackSession",
    "Relative",
    "Rule",
    "TemperatureLike",
    "Temperatures",
    "check_model_supported",
    "pullback_mode",
    "register_nonlinear",
    "register_rule",
    "registered_rules",
    "rule_for",
    "rules_suspended",
    "unregister_rule",
]
