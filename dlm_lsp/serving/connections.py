"""Connection limits for serve-http: uvicorn's HTTP/1.1 protocol with a header-read timeout.

uvicorn closes idle keep-alive connections, but not one that sends partial headers, or
nothing at all after connecting: each would hold a slot forever. Here a connection still
waiting for a request's complete headers ``header_timeout_s`` after its last byte is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any


def header_timeout_protocol(header_timeout_s: float) -> type:
    """An ``H11Protocol`` subclass that closes connections slow to send their headers."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._waiting_for_headers():
                self._arm()
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _waiting_for_headers(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout_s, self._timed_out)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _timed_out(self) -> None:
            self._header_timer = None
            if self._waiting_for_headers() and not self.transport.is_closing():
                self.transport.close()

    return HeaderTimeoutH11
