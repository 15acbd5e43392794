"""The package's foundations: the root exception and its subclasses, process settings,
the fixed tokenizer, where data files live, and the chat-completions stream chunk that the
endpoint client and the probe read and the replay endpoint writes. Imports nothing else of the
project.
"""
