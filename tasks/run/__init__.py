"""The run layer: prompts into work items, shards claimed and processed, per-run live
objects, progress, the preflight, the run's start and end in the database.
May import tasks.engine, tasks.endpoints, tasks.store, tasks.records and below.
"""
