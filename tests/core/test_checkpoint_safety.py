"""Loading a checkpoint can never run code (``torch.load(weights_only=True)``), and a file that
is no checkpoint of this model is a short, clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.errors import UserError

SUPERVISED = {"data": {"batch_unlabeled": 0}, "optim": {"iters": 1}, "plugins": {"supervised": {}}}


class Payload:
    """Unpickling it writes ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('code ran')",)


def malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"iteration": 1, "recipe": {}, "student": Payload(marker)}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(recipe file, checkpoint) of a 1-iteration supervised run."""
    out = tmp_path_factory.mktemp("trained")
    recipe = out / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict(SUPERVISED)))
    assert main(["train", str(recipe), "--out", str(out / "run")]) == 0
    return recipe, out / "run" / "last.pt"


def test_reading_a_malicious_checkpoint_refuses_without_running_it(tmp_path):
    path = malicious_checkpoint(tmp_path / "evil.pt", tmp_path / "marker")
    with pytest.raises(UserError, match=r"^refusing to load .*evil.pt: it holds the Python object exec "
                                        r"besides tensors and plain values, and unpickling it could run code"):
        checkpoint.read(path)
    assert not (tmp_path / "marker").exists()


def test_a_written_checkpoint_reads_back_as_tensors_and_plain_values(trained):
    state = checkpoint.read(trained[1])
    assert checkpoint.not_plain(state) is None
    assert isinstance(state["training"]["rng"]["generator"], torch.Tensor) and state["iteration"] == 1


@pytest.mark.parametrize("content, message", [
    ([1, 2, 3], "is not an ssseg checkpoint: it holds a list, not a mapping"),
    ({"conv.weight": torch.zeros(1)}, "is not an ssseg checkpoint: it has no iteration, recipe, student"),
    (b"not a zip", "cannot read checkpoint {path}: not a torch checkpoint, or a damaged one "
                   "(UnpicklingError: Unsupported operand 110)"),
])
def test_files_that_are_no_checkpoint_are_one_line_errors(trained, tmp_path, capsys, content, message):
    path = tmp_path / "other.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    assert main(["eval", str(trained[0]), "--checkpoint", str(path)]) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_another_models_checkpoint_is_a_short_message(trained, tmp_path, capsys):
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(tiny_recipe_dict({
        **SUPERVISED, "model": {"options": {"encoder_depth": 3, "decoder_channels": [8, 8, 8]}}})))
    assert main(["eval", str(other), "--checkpoint", str(trained[1])]) == 2
    err = capsys.readouterr().err
    assert "holds the student weights of another model (" in err and "of another shape" in err
    assert len(err) < 600 and len(err.splitlines()) == 1, err


def test_eval_predict_and_resume_refuse_a_malicious_checkpoint(trained, tmp_path, capsys):
    """In this process, so that a checkpoint that could run code would run it here (the marker)."""
    recipe, marker = trained[0], tmp_path / "marker"
    evil = malicious_checkpoint(tmp_path / "evil.pt", marker)
    image = tmp_path / "image.png"
    Image.new("RGB", (32, 32)).save(image)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(recipe.read_text())
    malicious_checkpoint(run / "last.pt", marker)
    for argv in (["eval", str(recipe), "--checkpoint", str(evil)],
                 ["predict", str(recipe), str(image), "--checkpoint", str(evil), "--out", str(tmp_path / "p")],
                 ["train", str(recipe), "--out", str(run), "--resume"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("ssseg: error: refusing to load") and len(err.splitlines()) == 1, (argv, err)
    assert not marker.exists()
