"""gunicorn's configuration as a worker reads it: each setting looked up once.

gunicorn's ``Config`` answers every read of a setting (``cfg.keepalive``)
through ``__getattr__``, a dict lookup and the setting's ``get()``: about
0.3 µs, and a request reads 22 of them (the parser's limits and header
policy, the keep-alive, the hooks, ``base_environ``'s ``workers`` and
``errorlog``), 6-7 µs of the worker's CPU a request on W2. A worker's settings
never change after it forks (a reload starts new workers), so the worker keeps
the first value of each.

The same holds for the part of each request's WSGI environ that comes from
the configuration alone (``gunicorn.http.wsgi.base_environ``): gunicorn builds
it a request, with a ``wsgi.errors`` that looks up the error log's handlers
under logging's lock (1.3 µs in all). ``SettledEnviron`` builds it once.
"""

from typing import Any

from gunicorn.http import wsgi


class SettledConfig:
    """A worker's view of gunicorn's ``Config``: the first read of a setting is
    kept as a plain attribute; anything else (methods, properties) is read
    from the ``Config`` each time."""

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    def __getattr__(self, name: str) -> Any:
        # Called only when ``name`` is not kept yet. Special names are the
        # object's own (copy asks for __setstate__ before __init__ has run).
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._cfg, name)
        if name in self._cfg.settings:
            self.__dict__[name] = value
        return value


class LiveErrors(wsgi.WSGIErrorsWrapper):
    """``wsgi.errors`` shared by a worker's requests: it finds the error log's
    streams at each write, as gunicorn's finds them at each request, so a log
    file reopened since (``USR1``) is the one written to."""

    def __init__(self, cfg: Any) -> None:
        self._cfg = cfg

    @property
    def streams(self) -> list[Any]:
        """The error log's streams now."""
        return wsgi.WSGIErrorsWrapper(self._cfg).streams


class SettledEnviron:
    """``base_environ(cfg)`` for one worker's ``cfg``: a copy of one made once."""

    def __init__(self, cfg: Any) -> None:
        self._base = {**wsgi.base_environ(cfg), "wsgi.errors": LiveErrors(cfg)}

    def __call__(self, cfg: Any) -> dict[str, Any]:
        """A request's base environ (``cfg`` is the worker's, as when built)."""
        return self._base.copy()
