"""What leaves the factory: accepted samples exported as training data (`export.py`), one
sink per file format (`sinks.py`, checked against the spec's format names), the manifest.
May import tasks.store, tasks.records and below.
"""
