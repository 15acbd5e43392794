"""The package's foundations: the root exception and its subclasses, process settings,
the fixed tokenizer, and where data files live. Imports nothing else of the project.
"""
