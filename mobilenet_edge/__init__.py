"""mobilenet-edge: MobileNet V1 from a reference PyTorch model to an int8 file on a Raspberry Pi.

Importing this package (and its runtime half) never imports torch.
"""

__version__ = "0.1.0"
