"""The engine and its I/O: endpoint client, stage runner and policy, ledger, storage.

Prefect tasks are thin wrappers (tasks/prefect_tasks.py) over the plain functions here.
"""
