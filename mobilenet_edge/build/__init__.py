"""The only torch side: the PyTorch ``MobileNetV1``, weights import, ONNX and TFLite export, the
bundle builder and the grid. Imports: every other layer, torch, onnxsim, litert-torch."""
