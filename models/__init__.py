"""The benchmark model zoo: MobileNetV1/V2, ResNet-18 and a small MLP, written in PyTorch with seeded weights.

    from edgesparse.models import ZOO, build, export_onnx
    path = export_onnx("mobilenet_v1")          # cached ONNX (opset 17, IR 10, BatchNormalization kept)
    model = build("resnet18")                   # torch.nn.Module in eval mode, same weights every time

Importing this package does not import torch; building or exporting a model does.
"""

from .export import export_onnx
from .zoo import ZOO, ZooEntry, build

__all__ = ["ZOO", "ZooEntry", "build", "export_onnx"]
