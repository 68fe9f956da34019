"""Diagnostics for making training work: lr range test, overfit check, gradient check, per-layer statistics
(also as a trainer hook) and visualisations. The command line is `python -m visionzoo.diagnose`."""
from visionzoo.diagnostics.gradcheck import GradCheckResult, check_function, check_model, check_module
from visionzoo.diagnostics.lr_finder import LRFinderResult, lr_find_config, lr_range_test, suggest_lr
from visionzoo.diagnostics.overfit import OverfitResult, overfit_check
from visionzoo.diagnostics.stats import ActivationStats, LayerStatsHook, StatsThresholds

__all__ = ["ActivationStats", "GradCheckResult", "LayerStatsHook", "LRFinderResult", "OverfitResult",
           "StatsThresholds", "check_function", "check_model", "check_module", "lr_find_config", "lr_range_test", "overfit_check",
           "suggest_lr"]
