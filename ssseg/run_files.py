"""The names of the files in a training run's output folder."""

LAST, BEST = "last.pt", "best.pt"  # the newest checkpoint, the one with the best headline mIoU
RECIPE, METRICS = "recipe.yaml", "metrics.jsonl"  # the resolved recipe, one JSON record per line
STAGES, DONE = "stages", "done.json"  # a staged run's stage folders; a finished stage's marker
SNAPSHOTS = "snapshot_*.pt"  # the snapshots a stage kept


def snapshot(iteration: int) -> str:
    """The snapshot a stage keeps at ``iteration`` (``stage_snapshots``)."""
    return f"snapshot_{iteration:07d}.pt"
