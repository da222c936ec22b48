"""Mean-teacher feature distillation for ssseg (an example third-party strategy plugin)."""

from ssseg_feature_distillation.plugin import FeatureDistillation, distillation_loss

__all__ = ["FeatureDistillation", "distillation_loss"]
