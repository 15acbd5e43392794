"""Benchmarks that print figures: validators over recorded traces, and the replay
benchmark (the real path twice, in flight and generate-then-filter). May import every room
of tasks below it and the replay endpoint (a test double).
"""
