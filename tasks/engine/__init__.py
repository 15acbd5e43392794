"""The streaming engine: a sample's stages, checkpoints judged by validators, the
reject/continue/accept policy, the step judge, judge scores, ledger rows.
May import tasks.endpoints, tasks.records, validators, foldem.spec and foldem.core.
"""
