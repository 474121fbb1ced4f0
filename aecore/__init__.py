"""aecore: autoencoders you can train, inspect and compare, on CPU or CUDA."""

__version__ = "0.1.0"
