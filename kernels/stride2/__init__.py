"""f32 stride-2 convolution templates in NCHW whose input rows are de-interleaved with vector shuffles
(``rows.py``): depthwise k x k (``depthwise.py``) and direct k x k over a few input channels, the first layer
of a vision network (``conv.py``). Stride-1 depthwise convolutions have their own template (kernels/stride1); other
stride-1 convolutions are scheduled by the rules in kernels/ (conv2d.py)."""

from .conv import ConvS2Spec, make_conv_s2_kernel
from .depthwise import DepthwiseS2Spec, make_depthwise_s2_kernel

__all__ = ["ConvS2Spec", "DepthwiseS2Spec", "make_conv_s2_kernel", "make_depthwise_s2_kernel"]
