"""recsys: train and evaluate recommenders that understand what users want."""

__version__ = "0.1.0"
