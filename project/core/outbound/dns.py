"""One address lookup per upstream per ``pool.DNS_TTL_S``, shared by its sockets.

geventhttpclient looks the host up for every new connection, through gevent's
resolver thread pool (10 threads). When a burst of legs opens connections at
once (W1 ramping to 400 users: ~2,000 per worker), the lookups queue behind
each other and the GIL: even "127.0.0.1" took up to 13 s, and legs timed out
at the 15 s deadline before connecting. One lookup shared by the burst, kept
for ``dns_ttl``, costs one hop.
"""

import time
from typing import Any

from geventhttpclient.connectionpool import ConnectionPool

from ..singleflight import SharedCallAbandoned, SingleFlight

# What getaddrinfo returns: (family, type, proto, canonname, sockaddr) tuples.
Addresses = list[tuple[Any, Any, int, str, tuple[str, int] | tuple[str, int, int, int]]]

# Address lookups in flight in this process, one per pool.
_lookups = SingleFlight()


class SharedLookup(ConnectionPool):
    """Resolves the upstream's host once per ``dns_ttl`` seconds for all its sockets.

    A mixin for geventhttpclient's pools: it comes before the pool class in
    the bases of ``http_pool.UpstreamPool``.
    """

    dns_ttl: float  # set by http_pool.Client from pool.DNS_TTL_S
    _addresses: tuple[float, Addresses] | None = None  # (until, addresses)

    def _resolve(self) -> Addresses:
        cached = self._addresses
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        while True:
            try:
                addresses, _ = _lookups.do(
                    id(self), self._lookup, timeout=self.connection_timeout
                )
                return addresses
            except SharedCallAbandoned:
                # The caller doing the lookup was killed; someone must do it again.
                continue

    def _lookup(self) -> Addresses:
        addresses = super()._resolve()
        self._addresses = (time.monotonic() + self.dns_ttl, addresses)
        return addresses
