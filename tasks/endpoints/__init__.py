"""Talking to OpenAI-compatible endpoints: the client and its calls (stream chunks are read
with foldem/core/chat_stream.py), routing over several endpoints with circuit breakers,
cross-process limits, API keys, and the local model server (llama.cpp on the CPU in a child
process: local_model.py, local_server.py).
May import tasks.records, foldem.spec and foldem.core.
"""
