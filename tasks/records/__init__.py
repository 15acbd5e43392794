"""The records of a run as pydantic models (prompts, work items, samples, rejections,
ledger rows, summaries): the data every other room of `tasks` passes around.
Imports only foldem.core.
"""
