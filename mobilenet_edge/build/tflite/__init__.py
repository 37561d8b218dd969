"""PyTorch -> LiteRT ``.tflite`` (litert-torch), one module per job: :mod:`.litert` (import, quiet, the
layout-pass patch), :mod:`.layout` (NHWC wrapper, input arrays), :mod:`.pt2e` (int8 quantizer, grid
observer, bias correction), :mod:`.records` (manifest records), :mod:`.export` (:func:`export_tflite`)."""
