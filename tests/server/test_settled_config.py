"""A worker's settings are read from gunicorn's Config once, then kept."""

import copy
import io
import logging

from gunicorn.config import Config
from gunicorn.http import wsgi

from project.server.settled_config import SettledConfig, SettledEnviron


class CountingConfig(Config):
    """gunicorn's Config, counting the reads that reach its settings."""

    def __init__(self) -> None:
        super().__init__()
        self.__dict__["reads"] = 0

    def __getattr__(self, name: str):
        self.__dict__["reads"] += 1
        return super().__getattr__(name)


def test_every_setting_reads_as_gunicorn_reads_it():
    cfg = Config()
    cfg.set("keepalive", 75)
    cfg.set("forwarded_allow_ips", "10.0.0.1,10.0.0.2")
    settled = SettledConfig(cfg)
    for name in cfg.settings:
        assert getattr(settled, name) == getattr(cfg, name), name
    assert settled.keepalive == 75


def test_a_setting_is_read_from_the_config_once():
    cfg = CountingConfig()
    settled = SettledConfig(cfg)
    for _ in range(5):
        assert settled.keepalive == cfg.settings["keepalive"].get()
        assert settled.limit_request_line == 4094
    assert cfg.reads == 2


def test_methods_and_properties_are_the_configs_own_each_time():
    cfg = Config()
    settled = SettledConfig(cfg)
    assert not settled.is_ssl
    cfg.set("certfile", "/nonexistent.pem")
    assert settled.is_ssl  # a property: not kept
    assert "set" not in vars(settled) and settled.set.__self__ is cfg


def test_a_copy_is_a_config_of_its_own_kind():
    settled = SettledConfig(Config())
    assert copy.copy(settled).keepalive == settled.keepalive


def test_a_requests_base_environ_is_gunicorns_made_once_and_copied():
    cfg = Config()
    cfg.set("workers", 2)
    settled = SettledEnviron(cfg)
    first, second = settled(cfg), settled(cfg)
    gunicorns = wsgi.base_environ(cfg)
    assert first.keys() == gunicorns.keys()
    for key in gunicorns.keys() - {"wsgi.errors"}:
        assert first[key] == gunicorns[key], key
    first["HTTP_X"] = "one request's"
    assert "HTTP_X" not in second and first is not second
    assert first["wsgi.errors"] is second["wsgi.errors"]


def test_wsgi_errors_writes_to_the_error_logs_stream_of_the_moment():
    cfg = Config()
    cfg.set("errorlog", "/var/log/gunicorn/error.log")  # not "-": the handlers' streams
    handler = logging.StreamHandler(io.StringIO())
    errorlog = logging.getLogger("gunicorn.error")
    errorlog.addHandler(handler)
    try:
        errors = SettledEnviron(cfg)(cfg)["wsgi.errors"]
        errors.write("before\n")
        before, handler.stream = handler.stream, io.StringIO()  # as USR1 reopens
        errors.write("after\n")
        assert before.getvalue() == "before\n"
        assert handler.stream.getvalue() == "after\n"
    finally:
        errorlog.removeHandler(handler)


def test_a_worker_serves_with_its_settings_and_base_environ_settled(monkeypatch):
    from gunicorn import http, util
    from gunicorn.workers import ggevent

    from project.server import worker as worker_module

    # run() swaps module-level names for the worker process; put them back after.
    for owner, name in (
        (wsgi, "base_environ"),
        (wsgi, "Response"),
        (util, "write_error"),
        (util, "http_date"),
        (http, "get_parser"),
        (ggevent, "StreamServer"),
        (worker_module.BatchAcceptServer, "waiting"),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    served_with = []
    monkeypatch.setattr(
        ggevent.GeventWorker, "run", lambda self: served_with.append(self.cfg)
    )
    worker = worker_module.GeventWorker.__new__(worker_module.GeventWorker)
    worker.cfg = Config()
    worker.run()
    assert isinstance(served_with[0], SettledConfig)
    assert isinstance(wsgi.base_environ, SettledEnviron)
