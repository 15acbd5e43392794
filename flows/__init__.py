"""Prefect flows: orchestration only (which tasks, in which order, with which concurrency)."""
