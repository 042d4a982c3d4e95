"""Data: sources and Grain pipelines."""
