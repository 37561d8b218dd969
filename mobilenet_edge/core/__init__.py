"""Torch-free basics every other layer builds on: variants (paper Table 1), images (the one
preprocessing pipeline), labels, bundle files and the manifest, ONNX graph helpers, the ORT session
factory, platform/ISA, tool versions, strict JSON and errors. Imports: stdlib, numpy, onnx,
onnxruntime, Pillow, rich (progress bars only); never another layer of this package."""
