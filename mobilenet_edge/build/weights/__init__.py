"""Load and save MobileNet V1 weights: Google's TF-slim ``.tflite`` files, Keras ``.h5`` files, own
``.safetensors`` checkpoints, and PyTorch ``.pt``/``.pth`` state dicts (``torch.load(weights_only=True)``
only); Google's published files by name (registry, downloads, cache).

Nothing here unpickles untrusted code: ``.safetensors`` is a plain tensor container, ``.tflite`` is
read through the LiteRT interpreter, and a ``.pt`` whose unpickling would need anything beyond
tensors and plain containers is refused.

One module per job:

- :mod:`.load`: :func:`load_weights` (dispatch on the suffix), :func:`check_weights_path`, :class:`LoadedWeights`.
- :mod:`.tflite_file`: open and check a ``.tflite`` (identifier, appended metadata zip), read its tensors.
- :mod:`.tfslim`: TF-slim tensors -> ``MobileNetV1`` state dict and config, :func:`import_tflite`.
- :mod:`.checkpoint`: ``.safetensors`` / ``.pt`` save, read, validate and load.
- :mod:`.foreign`: state dicts of other PyTorch MobileNet V1 code mapped by layer order and shapes
  (:func:`~.foreign.map_state_dict`, known layouts as data in :data:`~.foreign.LAYOUTS`).
- :mod:`.module`: an in-memory ``torch.nn.Module`` (ours or other code's), :func:`~.module.load_module`.
- :mod:`.verify`: the source ``.tflite`` (LiteRT) vs the imported model (torch), :func:`verify_import`.
- :mod:`.keras`: Keras applications ``.h5`` weights (h5py, BN not folded), :func:`~.keras.import_keras_h5`.
- :mod:`.registry`: Google's published files as data (48 entries: google-quant / google-float / keras x
  the 16-point grid; URL, file inside, sha256 and size where known, published top-1/top-5).
- :mod:`.download`: pooch downloads into the platformdirs cache, hash checks, trust on first use, the
  shipped reference files (package data in ``data/``).
- :mod:`.resolve`: ``--weights`` values (path, name, ``random``, the pretrained default) -> a file.
"""

from __future__ import annotations

from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    save_checkpoint,
    validate_state_dict,
)
from .foreign import LAYOUTS, map_state_dict
from .load import SUFFIXES, LoadedWeights, check_weights_path, load_weights
from .module import load_module
from .tflite_file import TFLITE_LAYERS, RawTensor, check_appended_zip, default_res, open_tflite, read_tflite_tensors
from .tfslim import import_tflite, infer_alpha, tflite_preprocessing, tflite_state_dict
from .verify import read_imagenet_labels_csv, tflite_runner, verify_import

__all__ = [
    "CHECKPOINT_FORMAT", "CHECKPOINT_FORMAT_VERSION", "LAYOUTS", "SUFFIXES", "TFLITE_LAYERS", "LoadedWeights", "RawTensor",
    "check_appended_zip", "check_weights_path", "default_res", "import_tflite", "infer_alpha",
    "load_checkpoint", "load_module", "load_weights", "map_state_dict", "open_tflite", "read_imagenet_labels_csv", "read_tflite_tensors",
    "save_checkpoint", "tflite_preprocessing", "tflite_runner", "tflite_state_dict", "validate_state_dict",
    "verify_import",
]
