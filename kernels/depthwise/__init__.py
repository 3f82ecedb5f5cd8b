"""f32 depthwise convolutions with stride 2 as a template (``stride2.py``); stride 1 is scheduled by the window
rule (``kernels/window.py``)."""

from .stride2 import DepthwiseS2Spec, make_depthwise_s2_kernel

__all__ = ["DepthwiseS2Spec", "make_depthwise_s2_kernel"]
