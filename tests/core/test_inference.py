"""The Python inference API (``ssseg.inference.Segmenter``): the predictions of ``ssseg predict``
and of the evaluator for the same checkpoint, batches equal to images one by one, every input
type, clear errors, no training data read, and the README's and docs/inference.md's examples run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.evaluator import Evaluator
from ssseg.engine.run import build_run
from ssseg.errors import UserError
from ssseg.inference import Segmenter
from ssseg.metrics import ConfusionMatrix
from ssseg.recipe.load import load_recipe
from ssseg.pictures import to_pil
from core.test_checkpoint_safety import malicious_checkpoint

REPO = Path(__file__).resolve().parents[2]
TTA = ["eval.tta.flip=true", "eval.tta.scales=[0.75,1.0,1.5]"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """The folder of a 1-iteration mean-teacher FixMatch run (a student and a teacher)."""
    out = tmp_path_factory.mktemp("inference")
    recipe = out / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"optim": {"iters": 1},
                                                       "plugins": {"mean_teacher": {}, "fixmatch": {}}})))
    assert main(["train", str(recipe), "--out", str(out / "run")]) == 0
    return out / "run"


@pytest.fixture(scope="module")
def val(run) -> list[dict]:
    """The run's validation samples (6 images of 32²)."""
    data = build_run(load_recipe(run / "recipe.yaml"), needs="val").run.data
    return [data.val[i] for i in range(len(data.val))]


@pytest.fixture(scope="module")
def seg(run) -> Segmenter:
    return Segmenter.from_run(run, device="cpu")


@pytest.mark.parametrize("model, overrides", [("student", []), ("teacher", []), ("student", ["run.precision=bf16"])])
def test_masks_are_ssseg_predicts(run, val, tmp_path, model, overrides):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"img{i}.png")
        to_pil(val[i]["image"]).save(paths[-1])
    assert main(["predict", str(run / "recipe.yaml"), *map(str, paths), "--checkpoint", str(run / "last.pt"),
                 "--out", str(tmp_path / "out"), "--model", model, *(f"-o{o}" for o in overrides)]) == 0
    masks = Segmenter.from_run(run, model=model, overrides=overrides).predict(paths)
    for path, mask in zip(paths, masks):
        assert np.array_equal(np.array(Image.open(tmp_path / "out" / f"{path.stem}_mask.png")), mask.numpy())


def test_with_tta_the_masks_score_the_evaluators_miou(run, val):
    built = build_run(load_recipe(run / "recipe.yaml", TTA), needs="val")
    checkpoint.load_weights(built.run, run / "last.pt")
    metrics = Evaluator(built.run, built.plugins).evaluate()
    for model in ("student", "teacher"):
        seg = Segmenter.from_run(run, model=model, overrides=TTA)
        sizes = []
        seg.module.register_forward_hook(lambda m, inputs, out: sizes.append(tuple(inputs[0].shape)))
        cm = ConfusionMatrix(len(seg.class_names))
        for sample, mask in zip(val, seg.predict([s["image"] for s in val])):
            cm.update(mask, sample["mask"])
        assert cm.miou() == metrics[f"{model}/miou"]
        assert sizes == [(12, 3, 24, 24), (12, 3, 32, 32), (12, 3, 48, 48)]  # 6 images and their flips


def test_same_size_images_share_forwards_and_give_their_one_by_one_masks(run, val):
    seg = Segmenter.from_run(run, batch_size=2)
    forwards = []
    seg.module.register_forward_hook(lambda m, inputs, out: forwards.append(inputs[0].shape[0]))
    images = [s["image"] for s in val[:5]]
    one_by_one = [seg.predict(image) for image in images]
    forwards.clear()
    listed = seg.predict(images)
    assert forwards == [2, 2, 1]
    assert all(torch.equal(a, b) for a, b in zip(listed, one_by_one))
    assert torch.equal(seg.predict(torch.stack(images)), torch.stack(one_by_one))
    mixed = [images[0], images[1][:, :20, :24], images[2]]  # two sizes: a batch of 2 and one image
    forwards.clear()
    masks = seg.predict(mixed)
    assert sorted(forwards) == [1, 2] and [tuple(m.shape) for m in masks] == [(32, 32), (20, 24), (32, 32)]
    assert torch.equal(masks[1], seg.predict(mixed[1])) and torch.equal(masks[2], one_by_one[2])


def test_every_input_type_gives_the_same_mask(seg, val, tmp_path):
    array = (val[0]["image"] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # [H, W, 3]
    Image.fromarray(array).save(tmp_path / "image.png")
    expected = seg.predict(torch.from_numpy(array).permute(2, 0, 1).float() / 255)
    for image in (array, Image.fromarray(array), Image.fromarray(array).convert("RGBA"),
                  tmp_path / "image.png", str(tmp_path / "image.png")):
        assert torch.equal(seg.predict(image), expected), type(image)
    assert expected.shape == (32, 32) and expected.dtype == torch.int64


def test_probabilities_come_with_their_masks(seg, val):
    images = torch.stack([s["image"] for s in val[:2]])
    masks, probs = seg.predict(images, probabilities=True)
    assert probs.shape == (2, len(seg.class_names), 32, 32) and masks.shape == (2, 32, 32)
    assert torch.allclose(probs.sum(1), torch.ones(2, 32, 32)) and torch.equal(probs.argmax(1), masks)


def test_loading_builds_no_trainer_reads_no_data_and_keeps_the_callers_random_stream(run, monkeypatch):
    import ssseg.engine.run as run_module
    from ssseg.engine.trainer import Trainer

    needs, build_data = [], run_module.build_data
    monkeypatch.setattr(run_module, "build_data", lambda cfg, need: needs.append(need) or build_data(cfg, need))
    monkeypatch.setattr(Trainer, "__init__", lambda *a, **k: pytest.fail("built a trainer"))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    Segmenter.from_run(run, model="teacher")
    assert needs == ["classes"] and torch.equal(torch.get_rng_state(), state)


def test_a_checkpoint_holding_code_is_refused_unrun(run, tmp_path):
    path = malicious_checkpoint(tmp_path / "evil.pt", tmp_path / "marker")
    with pytest.raises(UserError, match="refusing to load .*evil.pt"):
        Segmenter(run / "recipe.yaml", path)
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize("load, message", [
    (lambda run: Segmenter.from_run(run.parent / "nowhere"), r"run folder not found: .*nowhere$"),
    (lambda run: Segmenter.from_run(run, checkpoint="iter_0000001.pt"),
     r"has no checkpoint iter_0000001.pt; it has best.pt, last.pt$"),
    (lambda run: Segmenter(run / "recipe.yaml", run / "missing.pt"), r"checkpoint not found: .*missing.pt$"),
    (lambda run: Segmenter(run / "missing.yaml", run / "last.pt"), r"missing.yaml: recipe file not found$"),
    (lambda run: Segmenter.from_run(run, model="ema"), r"ema: this recipe evaluates student, teacher$"),
    (lambda run: Segmenter.from_run(run, batch_size=0), r"batch_size=0: valid: an integer > 0$"),
    (lambda run: Segmenter.from_run(run, device="cuda:99"), r"run.device: 'cuda:99', but torch sees"),
    (lambda run: Segmenter(load_recipe(run / "recipe.yaml"), run / "last.pt", overrides=TTA),
     r"overrides apply to a recipe file"),
    (lambda run: Segmenter.from_run(run, overrides=["eval.tta.scales=[0]"]),
     r"eval.tta.scales: \[0.0\]: 0.0 is not a finite number > 0; valid: a non-empty list"),
])
def test_loading_errors_name_the_thing_and_what_is_valid(run, load, message):
    with pytest.raises(UserError, match=message):
        load(run)


@pytest.mark.parametrize("images, message", [
    (torch.rand(4, 32, 32), r"^image: a torch.float32 tensor \[4, 32, 32\]; valid: a float tensor \[3, H, W\]"),
    (torch.rand(2, 32, 32, 3), r"^images\[0\]: a torch.float32 tensor \[32, 32, 3\]; valid: .*channels first"),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), r"^image: a torch.uint8 tensor \[3, 8, 8\]; valid: a float"),
    (torch.full((3, 8, 8), 255.0), r"^image: values in \[255, 255\]; valid: \[0, 1\] \(divide 8-bit images by 255\)"),
    (np.zeros((8, 8, 3), np.float32), r"^image: a numpy array of float32 \[8, 8, 3\]; valid: uint8 \[H, W, 3\]"),
    (np.zeros((8, 8), np.uint8), r"^image: a numpy array of uint8 \[8, 8\]; valid"),
    ([torch.rand(3, 8, 8), 7], r"^images\[1\]: a int; valid: a float tensor \[3, H, W\] or \[B, 3, H, W\] in "
                               r"\[0, 1\], a PIL image, a uint8 numpy array \[H, W, 3\], or an image file's path$"),
    ([], r"^predict: an empty list"),
    ("no/such/image.png", r"no/such/image.png: unreadable image"),
])
def test_bad_images_are_clear_errors(seg, images, message):
    with pytest.raises(UserError, match=message):
        seg.predict(images)


def python_block(path: Path, after: str) -> str:
    """The first ```python block of ``path`` after the line ``after``."""
    text = path.read_text()
    return re.search(r"^```python\n(.*?)^```", text[text.index(after + "\n"):], re.S | re.M)[1]


@pytest.mark.parametrize("doc, heading", [("README.md", "## Python inference"),
                                          ("docs/inference.md", "## Loading and predicting")])
def test_the_documented_example_runs(run, val, tmp_path, monkeypatch, doc, heading):
    shutil.copytree(run, tmp_path / "runs" / "quickstart")
    to_pil(val[0]["image"]).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(python_block(REPO / doc, heading), f"{doc} python block", "exec"), namespace)
    assert namespace["mask"].shape == (32, 32)
