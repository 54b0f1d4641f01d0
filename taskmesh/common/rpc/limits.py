"""Size limits of every gRPC server and channel taskmesh opens.

gRPC's own default refuses inbound messages over 4 MiB but sends anything; taskmesh sets one
explicit bound both ways, on every server and every channel, so an oversized message is refused
by whichever side sees it first, before it is decoded.
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 8 * 1024 * 1024


def message_size_options(limit: int = MAX_MESSAGE_BYTES) -> tuple[tuple[str, int], ...]:
    """The channel/server options that bound messages to ``limit`` bytes each way."""
    return (
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
    )
