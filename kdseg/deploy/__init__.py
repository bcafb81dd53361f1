"""Deployment: the best config, the student exported for a runtime, its speed, held-out evaluation."""
