"""The engine twin: a model of one vLLM V1 engine. Pure: no I/O, time is always an argument.

It models what decides KV-cache occupancy and latency in vLLM V1: a block pool with a
free-block queue and prefix caching (`block`), per-request block tables and slot allocation
(`cache`), requests and their timestamps (`request`), FCFS scheduling under a token budget and
a cap on sequences with preemption by recompute or swap (`scheduler`), a step-time model from
a GPU and model profile (`profile`), and the engine loop with explicit time and the metrics
that vLLM exports (`engine`).

The `kvscale twin` server process and `kvscale simulate` are thin shells on top of `engine`;
nothing here reads a clock, a file or a socket.
"""
