"""ONNX export: models checked by onnx and run by onnxruntime against onlytorch."""
