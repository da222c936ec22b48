"""FreeMatch-style self-adaptive class-wise confidence thresholds, an ssseg strategy plugin."""

from ssseg_adaptive_threshold.plugin import AdaptiveThreshold, SelfAdaptiveThresholds

__all__ = ["AdaptiveThreshold", "SelfAdaptiveThresholds"]
