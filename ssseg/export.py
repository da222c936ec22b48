"""Exporting a trained model for use outside ssseg: TorchScript or ONNX, with a JSON sidecar.

The input contract of an exported model: float32 images ``[B, 3, H, W]``, RGB in [0, 1], any batch
size, height and width (the recipe's mean/std normalisation and the padding to the encoder's
stride are inside the model); the output: float32 logits ``[B, C, H, W]`` at the input size, whose
argmax over dim 1 is the class index. It is one forward pass: the recipe's evaluation mode
(sliding windows, flips) is not part of it. The export is traced on the CPU, then run once more at
another batch size and image size and compared with the checkpoint's model.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import attrs
import torch
from torch import nn

from ssseg import __version__
from ssseg.errors import UserError
from ssseg.files import write_atomically, write_error, write_text
from ssseg.recipe.schema import Recipe
from ssseg.engine.evaluator import load_model

FORMATS = ("torchscript", "onnx")
INPUT, OUTPUT = "images", "logits"
TOLERANCE = 1e-4  # largest |exported - checkpoint model| accepted, per unit of the largest |logit| above 1
EXTRA = "pip install 'ssseg[export]'"


@attrs.frozen
class Exported:
    """What :func:`export_model` wrote: the model file, its sidecar, the metadata, and the largest
    difference from the checkpoint's model on the check input (None: not checked)."""

    path: Path
    sidecar: Path
    metadata: dict[str, Any]
    difference: float | None
    check_shape: tuple[int, ...]


def format_of(out: Path, fmt: str | None) -> str:
    """``fmt``, or the format ``out``'s suffix implies: ``.onnx`` -> onnx, else torchscript."""
    if fmt is None:
        return "onnx" if out.suffix.lower() == ".onnx" else "torchscript"
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: valid: {', '.join(FORMATS)}")
    return fmt


def sidecar_of(out: Path) -> Path:
    """The JSON metadata file written beside ``out`` (``model.onnx`` -> ``model.onnx.json``)."""
    return out.with_name(out.name + ".json")


def check_writable(out: Path) -> None:
    """Fail before any work when ``out`` cannot be written (a folder, or an unwritable place)."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name, e.g. {out / 'model.onnx'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as err:
        raise write_error(err, out, replacing=False) from None


def require_onnx() -> None:
    """Fail when the ``onnx`` package (the ``export`` extra) is missing."""
    try:
        import onnx  # noqa: F401 - optional dependency
    except ImportError:
        raise UserError(f"--format onnx needs the onnx package: {EXTRA}") from None


def metadata(recipe: Recipe, run, checkpoint: Path, model: str, fmt: str) -> dict[str, Any]:
    """The sidecar: what the file holds, its input and output contract, the classes."""
    data = run.data
    return {
        "format": fmt, "model": model, "checkpoint": str(checkpoint),
        "architecture": {"arch": recipe.model.arch, "encoder": recipe.model.encoder},
        "input": {"name": INPUT, "dtype": "float32", "shape": ["batch", 3, "height", "width"],
                  "colour": "RGB", "range": [0.0, 1.0],
                  "normalisation": "inside the model: (image - mean) / std",
                  "mean": list(recipe.model.mean), "std": list(recipe.model.std)},
        "output": {"name": OUTPUT, "dtype": "float32",
                   "shape": ["batch", data.num_classes, "height", "width"],
                   "meaning": "class logits at the input size; argmax over dim 1 is the class index"},
        "classes": list(data.class_names), "palette": [list(c) for c in data.palette],
        "ignore_index": data.ignore_index,
        "evaluation": "one forward pass at the input size; the recipe's eval.mode is not included",
        "versions": {"ssseg": __version__, "torch": torch.__version__},
    }


# torch 2.10+ deprecates TorchScript (a FutureWarning at each of torch.jit.trace, trace_method, save
# and load: "`torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`")
# and the TorchScript-based ONNX exporter. No successor gives the same artefact: torch.export
# writes an ExportedProgram (.pt2), which torch.jit.load and libtorch cannot read, and the dynamo
# ONNX exporter needs the onnxscript package, which the 'export' extra does not install. So export
# keeps both and silences exactly these warnings (category, start of the message, the module that
# warns), no other:
TORCH_DEPRECATIONS = (
    (FutureWarning, r"`torch\.jit\.\w+` is (deprecated|not supported in Python 3\.14)", ""),
    (DeprecationWarning, r"You are using the legacy TorchScript-based ONNX export", ""),
    (DeprecationWarning, r"The feature will be removed", r"torch\.onnx\."),  # its exporter_context
)


@contextlib.contextmanager
def torch_deprecations_silenced() -> Iterator[None]:
    """Inside: no :data:`TORCH_DEPRECATIONS` warning, and no tracer warning (export_model checks
    the traced graph at another input size instead)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        for category, message, module in TORCH_DEPRECATIONS:
            warnings.filterwarnings("ignore", message, category, module)
        yield


def torchscript_bytes(module: nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """``module`` traced on ``example``, saved with the metadata as the extra file ``ssseg.json``."""
    traced = torch.jit.trace(module, example, check_trace=False)  # export_model checks at another size
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer, _extra_files={"ssseg.json": json.dumps(meta)})
    return buffer.getvalue()


def onnx_bytes(module: nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    """``module`` as ONNX with dynamic batch, height and width, the metadata in its properties."""
    import onnx

    buffer = io.BytesIO()
    dynamic = {0: "batch", 2: "height", 3: "width"}
    # the TorchScript-based exporter: dynamic sizes through the same trace, in a second
    torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=[INPUT],
                      output_names=[OUTPUT], dynamic_axes={INPUT: dynamic, OUTPUT: dynamic})
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {"ssseg": json.dumps(meta)})
    return proto.SerializeToString()


def run_exported(fmt: str, data: bytes, images: torch.Tensor) -> torch.Tensor | None:
    """The logits the exported bytes give for ``images``; None for ONNX without onnxruntime."""
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(io.BytesIO(data))(images)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT], {INPUT: images.numpy()})[0])


def export_model(recipe: Recipe, checkpoint: Path, out: Path, fmt: str, model: str = "student") -> Exported:
    """Export the ``model`` (``student``, or a name from ``eval_models``) of ``checkpoint`` to
    ``out`` in ``fmt`` (``torchscript`` or ``onnx``) with the sidecar ``<out>.json``, and check
    it against the checkpoint's model at another input size."""
    if fmt == "onnx":
        require_onnx()
    check_writable(out)
    if not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    recipe = attrs.evolve(recipe, run=attrs.evolve(recipe.run, device="cpu", channels_last=False))
    run, module = load_model(recipe, checkpoint, model)
    meta = metadata(recipe, run, checkpoint, model, fmt)
    stride = getattr(module, "stride", 32)
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, 3, 4 * stride, 4 * stride, generator=generator)
    check = torch.rand(2, 3, 4 * stride + 5, 5 * stride + 3, generator=generator)
    with torch.no_grad(), torch_deprecations_silenced():
        data = (torchscript_bytes if fmt == "torchscript" else onnx_bytes)(module, example, meta)
        expected, logits = module(check), run_exported(fmt, data, check)
    difference = None if logits is None else float((logits - expected).abs().max())
    scale = max(1.0, float(expected.abs().max()))
    if difference is not None and not difference <= TOLERANCE * scale:
        raise UserError(f"the exported model's logits differ from the checkpoint model's by "
                        f"{difference:.2g} on a {list(check.shape)} input (largest logit {scale:.3g}, "
                        f"tolerance {TOLERANCE:g} per unit): this model does not export faithfully "
                        f"to {fmt}; nothing was written")
    write_atomically(out, lambda file: file.write(data))
    write_text(sidecar_of(out), json.dumps(meta, indent=2) + "\n")
    return Exported(out, sidecar_of(out), meta, difference, tuple(check.shape))


def describe(exported: Exported) -> str:
    """The lines ``ssseg export`` prints."""
    meta = exported.metadata
    check = (f"checked: the largest |exported - checkpoint model| logit difference is "
             f"{exported.difference:.1e} on a {list(exported.check_shape)} input"
             if exported.difference is not None else
             f"not checked: onnxruntime is not installed ({EXTRA})")
    return (f"exported the {meta['model']} of {meta['checkpoint']} to {exported.path} ({meta['format']}) "
            f"with {exported.sidecar}\n"
            f"input:  {INPUT} float32 [batch, 3, height, width], RGB in [0, 1] (normalised inside)\n"
            f"output: {OUTPUT} float32 [batch, {len(meta['classes'])}, height, width] "
            f"(argmax over dim 1: the class; names in the sidecar)\n{check}")
