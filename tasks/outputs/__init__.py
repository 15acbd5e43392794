"""What leaves the factory: accepted samples exported as training data.
May import tasks.store, tasks.records and below.
"""
