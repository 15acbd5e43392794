"""The quality of the accepted set: near-duplicate removal and the Great Expectations
gate. May import tasks.store, tasks.records and below.
"""
