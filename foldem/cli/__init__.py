"""The `foldem` command line, the top layer: it may import everything below it
(flows, tasks, the replay endpoint for `foldem replay serve`) and nothing imports it.
"""
