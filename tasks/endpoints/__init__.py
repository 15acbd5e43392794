"""Talking to OpenAI-compatible endpoints: the streamed chunk model, the client and its
calls, routing over several endpoints with circuit breakers, cross-process limits, API keys.
May import tasks.records, foldem.spec and foldem.core.
"""
