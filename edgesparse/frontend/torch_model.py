"""PyTorch frontend: a torch.nn.Module goes through ONNX.

Why ONNX and not torch.export -> from_exported_program: both import MobileNetV1 correctly, but through ONNX
a PyTorch model takes exactly the path an ONNX user's model takes (one importer to test, the ONNX backend
node cases cover it), and `verify` can compare against ONNX Runtime on the very file that was compiled.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import EdgesparseError


def export_module(module, example_inputs, path: Path, opset: int = 17) -> Path:
    import onnx
    import torch

    if not isinstance(module, torch.nn.Module):
        raise EdgesparseError(f"expected an ONNX path or a torch.nn.Module, got {type(module).__name__}")
    args = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
    names = [f"input{i}" if len(args) > 1 else "input" for i in range(len(args))]
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        try:
            torch.onnx.export(module, args, str(path), input_names=names, output_names=["output"],
                              opset_version=opset, dynamo=False)
        except Exception as exc:
            raise EdgesparseError(f"{type(module).__name__}: ONNX export failed: {str(exc).splitlines()[0]}") from None
    model = onnx.load(str(path))
    model.ir_version = min(model.ir_version, 10)  # what onnxruntime-web accepts
    onnx.save(model, str(path))
    return path
