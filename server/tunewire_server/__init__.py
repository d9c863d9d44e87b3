"""tunewire server: the gRPC control plane and its training and inference workers."""

__version__ = "0.1.0"
