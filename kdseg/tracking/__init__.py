"""Experiment tracking: W&B runs, their mode, hardware metrics and epoch images."""
