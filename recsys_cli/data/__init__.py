"""Data sources, preprocessing, splits and datamodules."""
