"""Mutual TLS between the tiers: credentials from a ``TlsConfig`` (CA, certificate, key).

A region with ``tls`` serves only clients whose certificate chains to its CA; the master and
workers with ``tls`` present their own certificate and check the region's against theirs. Without
``tls`` everything stays plaintext, as before. Channels check the server certificate's name
against the host dialled, so certificates need that host (or IP) as a subject alternative name.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import grpc.aio

from taskmesh.common.errors import ConfigError
from taskmesh.common.topology import TlsConfig

Options = Sequence[tuple[str, int | str]]


def _read(tls: TlsConfig) -> tuple[bytes, bytes, bytes]:
    """CA, certificate and key as PEM bytes; ``ConfigError`` naming an unreadable file."""
    contents: list[bytes] = []
    for name, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
        try:
            contents.append(path.read_bytes())
        except OSError as error:
            raise ConfigError([f"tls.{name}: cannot read {path}: {error.strerror}"]) from None
    return contents[0], contents[1], contents[2]


def server_credentials(tls: TlsConfig) -> grpc.ServerCredentials:
    """Credentials of a listener that requires a client certificate signed by ``tls.ca``."""
    ca, cert, key = _read(tls)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def channel_credentials(tls: TlsConfig) -> grpc.ChannelCredentials:
    """Credentials of a client presenting ``tls.cert`` and trusting servers signed by ``tls.ca``."""
    ca, cert, key = _read(tls)
    return grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )


def add_port(server: grpc.aio.Server, address: str, tls: TlsConfig | None) -> int:
    """Bind ``server`` to ``address``, with mutual TLS when ``tls`` is set; returns the port."""
    if tls is None:
        return server.add_insecure_port(address)
    return server.add_secure_port(address, server_credentials(tls))


def aio_channel(address: str, tls: TlsConfig | None, options: Options) -> grpc.aio.Channel:
    """An asyncio channel to ``address``, over mutual TLS when ``tls`` is set."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)
