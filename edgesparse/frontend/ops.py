"""The ONNX ops edgesparse claims to compile.

A subset of what TVM's importer converts: the ops of vision models, each exercised by the ONNX backend
node test cases in tests/test_onnx_node_cases.py. An op is listed here only when its cases pass.
"""

SUPPORTED_OPS = frozenset(
    {
        # convolution, matrix products, normalisation
        "Conv", "Gemm", "MatMul", "BatchNormalization",
        # pooling
        "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
        # activations
        "Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Softmax", "LogSoftmax",
        "Elu", "Selu", "Softplus", "PRelu",
        # elementwise arithmetic
        "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Pow", "Max", "Min",
        "Sum", "Mean", "Floor", "Ceil", "Erf",
        # reductions
        "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin",
        # data movement
        "Reshape", "Flatten", "Transpose", "Concat", "Squeeze", "Unsqueeze", "Identity", "Pad", "Slice",
        "Split", "Resize", "Gather", "Cast", "DepthToSpace", "SpaceToDepth", "Tile", "Expand",
        # graph plumbing
        "Constant", "Dropout",
        # shape arithmetic (folded away once input shapes are pinned)
        "Shape", "ConstantOfShape", "Size", "Range",
    }
)
