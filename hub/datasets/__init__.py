"""Datasets that leave the hub for purposes beyond one person's care (commissioners' linked data)."""
