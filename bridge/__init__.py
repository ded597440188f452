"""Fullkit: the sales-to-ops hand-off bridge."""
