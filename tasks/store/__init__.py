"""Postgres: which database and how to reach it (embedded by default), the tables, runs,
samples, rejections and ledger rows written and read, shard claims across workers.
May import tasks.records and foldem.core.
"""
