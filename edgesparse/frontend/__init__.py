"""Frontends: ONNX files and torch.nn.Module objects into a Relax module with pinned shapes."""
