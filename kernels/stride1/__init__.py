"""f32 stride-1 window templates in NCHW: depthwise k x k with "same" padding (``depthwise.py``)."""

from .depthwise import DepthwiseS1Spec, make_depthwise_s1_kernel

__all__ = ["DepthwiseS1Spec", "make_depthwise_s1_kernel"]
