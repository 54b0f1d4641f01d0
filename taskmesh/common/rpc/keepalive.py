"""gRPC keepalive between workers and their region, both ends of it in one place.

A frozen region (SIGSTOP, a hung host) keeps its TCP connections open, so a worker's stream
would wait forever. With HTTP/2 pings every ``PING_INTERVAL`` and ``PING_TIMEOUT`` to answer,
the worker notices within about two seconds, drops the stream and reconnects with backoff,
keeping its results in the outbox meanwhile. The region must accept pings that often, also on
a stream that carries no data for a while.
"""

from __future__ import annotations

PING_INTERVAL_MS = 1000
PING_TIMEOUT_MS = 1000

CLIENT_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", PING_INTERVAL_MS),
    ("grpc.keepalive_timeout_ms", PING_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", PING_INTERVAL_MS // 2),
    ("grpc.http2.max_ping_strikes", 0),
)
