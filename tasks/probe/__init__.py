"""`foldem probe`: what an endpoint can do and whether a disconnect stops generation,
and probe results in Postgres. May import tasks.store, tasks.records, the replay endpoint's
stats model, and below.
"""
