"""The names of the files in a training run's output folder."""

LAST, BEST = "last.pt", "best.pt"  # the newest checkpoint, the one with the best headline mIoU
RECIPE, METRICS = "recipe.yaml", "metrics.jsonl"  # the resolved recipe, one JSON record per line
