"""``ssseg export``: the exported TorchScript and ONNX models give the checkpoint model's logits at
any batch size and image size; the sidecar states the contract; bad requests are one-line errors."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch
import yaml

from support.recipes import tiny_recipe_dict
from ssseg.cli import main
from ssseg.engine import checkpoint
from ssseg.engine.run import build_run
from ssseg import export
from ssseg.export import export_model
from ssseg.recipe.load import load_recipe

SHAPE = (2, 3, 29, 45)  # another batch size, and sizes the encoder's stride does not divide


@pytest.fixture
def saved(tmp_path):
    """(recipe file, checkpoint, run) of a mean-teacher run whose student and teacher weights
    differ from each other and from the recipe's initial weights; the run holds those weights."""
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict({"plugins": {"mean_teacher": {}, "fixmatch": {}}})))
    built = build_run(load_recipe(recipe))
    run = built.run
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in (run.student, run.teacher):
            for p in module.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=generator))
    checkpoint.Checkpointer(tmp_path).save(run, built.plugins)
    return recipe, tmp_path / "last.pt", run


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")  # torch 2.10+
def test_exports_give_the_checkpoint_models_logits(saved, tmp_path, capsys):
    recipe, ckpt, run = saved
    images = torch.rand(SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        teacher, student = run.teacher.eval()(images), run.student.eval()(images)
    assert (teacher - student).abs().max() > 1e-2
    out = tmp_path / "teacher.pt"
    assert main(["export", str(recipe), "--checkpoint", str(ckpt), "--out", str(out), "--model", "teacher"]) == 0
    printed = capsys.readouterr().out
    assert f"exported the teacher of {ckpt} to {out} (torchscript)" in printed
    assert "output: logits float32 [batch, 4, height, width]" in printed and "checked: " in printed
    extra = {"ssseg.json": ""}
    with torch.no_grad():
        got = torch.jit.load(str(out), _extra_files=extra)(images)
    assert got.shape == (2, 4, 29, 45)
    torch.testing.assert_close(got, teacher, atol=1e-4, rtol=0)  # --model chose the teacher's weights
    meta = json.loads(out.with_name("teacher.pt.json").read_text())
    assert meta == json.loads(extra["ssseg.json"])
    assert meta["classes"] == list(run.data.class_names) and meta["model"] == "teacher"
    assert meta["input"]["shape"] == ["batch", 3, "height", "width"] and meta["input"]["range"] == [0.0, 1.0]

    onnxruntime = pytest.importorskip("onnxruntime")  # the ONNX half needs the 'export' extra
    onnx = pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the legacy ONNX exporter's deprecation is silenced, no other
        exported = export_model(load_recipe(recipe), ckpt, tmp_path / "student.onnx", "onnx")
    assert exported.difference is not None and exported.difference <= 1e-4
    session = onnxruntime.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(["logits"], {"images": images.numpy()})[0])
    torch.testing.assert_close(got, student, atol=1e-4, rtol=0)
    props = {p.key: p.value for p in onnx.load(str(exported.path)).metadata_props}
    assert json.loads(props["ssseg"]) == json.loads(exported.sidecar.read_text())


def test_export_silences_torch_deprecating_torchscript_and_no_other_warning(saved, tmp_path, monkeypatch):
    recipe, ckpt, _ = saved
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning left unsilenced fails the export
        export_model(load_recipe(recipe), ckpt, tmp_path / "m.pt", "torchscript")

    traced = export.torchscript_bytes

    def also_warns(*args):
        warnings.warn("another library's deprecation", DeprecationWarning)
        return traced(*args)

    monkeypatch.setattr(export, "torchscript_bytes", also_warns)
    with pytest.warns(DeprecationWarning, match="another library's deprecation"):
        export_model(load_recipe(recipe), ckpt, tmp_path / "m.pt", "torchscript")


def test_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    recipe, ckpt = tmp_path / "tiny.yaml", tmp_path / "last.pt"
    recipe.write_text(yaml.safe_dump(tiny_recipe_dict()))
    ckpt.write_bytes(b"")

    def error(*extra):
        assert main(["export", str(recipe), "--checkpoint", str(ckpt), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "checkpoint not found: " in error("--out", str(tmp_path / "m.pt"), "--checkpoint", str(tmp_path / "no.pt"))
    assert "cannot read checkpoint" in error("--out", str(tmp_path / "m.pt"))
    assert f"--out {tmp_path} is a folder" in error("--out", str(tmp_path))
    (tmp_path / "file").write_text("")
    assert "cannot write in" in error("--out", str(tmp_path / "file" / "m.pt"))
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    assert "--format onnx needs the onnx package: pip install 'ssseg[export]'" in error(
        "--out", str(tmp_path / "m.onnx"))
    assert not any(tmp_path.glob("m.*"))
