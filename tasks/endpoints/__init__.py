"""Talking to OpenAI-compatible endpoints: the client and its calls (stream chunks are read
with foldem/core/chat_stream.py), routing over a stage's endpoints with circuit breakers
(breaker.py) that pause the stage's calls while all of its endpoints are down, cross-process
limits, API keys, and the local model server (llama.cpp on the CPU in a child process:
local_model.py, local_server.py).
May import tasks.records, foldem.spec and foldem.core.
"""
