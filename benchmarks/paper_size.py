"""Recipe overrides shared by the benchmarks that run a paper recipe at its model and crop on
the embedded data (no dataset or pretrained weights are needed)."""

from __future__ import annotations


def embedded_at(crop: int, batch: int) -> list[str]:
    """The embedded dataset (images of min(crop, 512) px, padded to ``crop``), random weights,
    ``batch`` labeled + ``batch`` unlabeled images per step, no loader workers."""
    return ["data.dataset=embedded", "data.root=null", f"data.split={batch}", f"data.crop={crop}",
            f"data.options={{size: {min(crop, 512)}, train: {2 * batch}, val: 3}}",
            "model.encoder_weights=null", f"data.batch_labeled={batch}",
            f"data.batch_unlabeled={batch}", "data.workers=0"]
