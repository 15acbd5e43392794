"""Text machinery the validators share: answer finding, exact arithmetic without eval,
numbers with positions, the incremental JSON parser. Imports only validators.base.
"""
