"""uvicorn's HTTP protocol, extended to hand the TLS client certificate to the application.

ASGI servers do not pass client certificates to applications; this subclass reads the
verified peer certificate once per connection and puts the caller's DN in the request scope
(``scope["extensions"]["tls"]``), which :mod:`pandawms.api.auth` reads. It builds on uvicorn's
httptools protocol (a C parser) when httptools is installed, and on h11 otherwise.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pandawms.httpd.tls import client_identity, with_client_identity

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - httptools is a dependency, h11 is the fallback
    from uvicorn.protocols.http.h11_impl import H11Protocol as _Base  # type: ignore[assignment]


class TLSIdentityProtocol(_Base):
    """uvicorn's HTTP protocol that exposes the client certificate's DN to the app."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            identity: dict[str, Any] | None
            try:
                identity = client_identity(ssl_object)
            except ValueError:
                identity = None
            self.app = with_client_identity(self.app, identity)
