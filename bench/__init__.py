"""Throughput and latency of Stigmer Core against bare grpcio, in one process run.

Absolute numbers on a shared two-core machine drift from run to run; a ratio
against a baseline measured minutes earlier in the same process does not, or
much less. So every framework figure is printed next to the figure it should
be judged by: the bare grpcio echo server for network calls, the network call
for in-process calls, the serial create for concurrent creates.

Run ``python -m bench`` (``--quick``, ``--only NAME``, ``--json FILE``).
"""
