"""The package version (a leaf, so checkpoints can record it without importing the package)."""
__version__ = "0.3.0"
