"""What people read: run summaries (terminal and Prefect artifact), rejection analytics
from the SQL views, charts. May import tasks.store, tasks.records and below.
"""
