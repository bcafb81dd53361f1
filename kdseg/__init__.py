"""kdseg."""
