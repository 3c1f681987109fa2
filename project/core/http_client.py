"""The outbound HTTP client: one pooled ``requests.Session`` per worker process.

Built lazily after gunicorn forks (a session created in the master would share
sockets across workers) with a pool as large as the worker's concurrency:
urllib3's default of 10 connections per host discards and reopens connections
as soon as a fan-out exceeds it.
"""

import os
from typing import Any

import requests
from requests.adapters import HTTPAdapter

_session: dict[str, Any] = {"pid": None, "session": None}


def get_session() -> requests.Session:
    """Return this process's shared session, creating it on first use."""
    if _session["pid"] != os.getpid():
        from django.conf import settings

        session = requests.Session()
        # With trust_env, every request scans os.environ for proxy settings and
        # reads .netrc: ~15% of a fan-out worker's CPU in a py-spy profile of W1.
        session.trust_env = settings.HTTP_TRUST_ENV
        adapter = HTTPAdapter(
            pool_connections=16,
            pool_maxsize=settings.HTTP_POOL_MAXSIZE,
            max_retries=0,
            pool_block=False,
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _session.update(pid=os.getpid(), session=session)
    return _session["session"]


def http_get(
    url: str,
    *,
    timeout: float,
    params: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> requests.Response:
    """GET ``url`` with ``timeout`` seconds for the connect and for each read.

    ``requests`` applies the read timeout per socket read, so a body that
    trickles in forever is only cut by the caller's ``gevent.Timeout`` (the
    fan-out wraps every leg in one). Timeouts surface as ``TimeoutError`` and
    failures to connect as ``ConnectionError``, with messages that do not
    reveal the upstream's address to our clients.
    """
    from django.conf import settings

    connect = min(settings.HTTP_CONNECT_TIMEOUT_S, timeout)
    try:
        return get_session().get(
            url,
            params=params,
            headers=headers,
            timeout=(connect, timeout),
            allow_redirects=False,
        )
    except requests.ConnectionError as exc:
        if isinstance(exc, requests.ConnectTimeout):
            raise TimeoutError(
                f"could not connect within {connect * 1000:.0f} ms"
            ) from exc
        raise ConnectionError("could not connect to upstream") from exc
    except requests.Timeout as exc:
        raise TimeoutError(
            f"no answer from upstream within {timeout * 1000:.0f} ms"
        ) from exc
