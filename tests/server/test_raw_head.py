"""The request head scanned before gunicorn's parser while admission is contended."""

from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.http.errors import LimitRequestHeaders, ObsoleteFolding
from gunicorn.http.message import Request

from project.server import raw_head
from project.server.admission import runtime as admission
from project.server.raw_head import AdmissionParser, RawHead, scan

PLAIN = (
    b"GET /demo/fan-out/?http=10&ms=50 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"
    b"User-Agent: h2load nghttp2/1.52.0\r\nX-Request-Timeout-Ms: 300"
)


def test_a_plain_head_gives_the_path_version_and_wanted_headers():
    assert scan(PLAIN) == (
        "/demo/fan-out/",
        (1, 1),
        [("X-REQUEST-TIMEOUT-MS", "300")],
        False,
    )


@pytest.mark.parametrize(
    ("head", "close"),
    [
        (b"GET / HTTP/1.1\r\nConnection: keep-alive", False),
        (b"GET / HTTP/1.1\r\nConnection: Upgrade, close", True),
        (b"GET / HTTP/1.0\r\nHost: x", True),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 0", False),
        (b"POST / HTTP/1.1\r\nContent-Length: 5", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0", True),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked", True),
        (b"POST / HTTP/1.1\r\nExpect: 100-continue", True),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket", True),
    ],
)
def test_a_refusal_closes_unless_the_request_surely_ended_with_its_head(head, close):
    scanned = scan(head)
    assert scanned is not None
    assert scanned[3] is close


@pytest.mark.parametrize(
    "head",
    [
        b"get / HTTP/1.1",  # gunicorn's rules for methods, not ours
        b"GET  / HTTP/1.1",
        b"GET //evil.example/ HTTP/1.1",  # a netloc to urlsplit
        b"GET http://example.com/ HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET / HTTP/2.0",
        b"GET /\x00 HTTP/1.1",
        b"\r\nGET / HTTP/1.1",
        b"GET / HTTP/1.1\r\nHost: x\r\n folded",
        b"GET / HTTP/1.1\r\nNo colon here",
        b"GET / HTTP/1.1\r\nHost : x",
        b"GET / HTTP/1.1\r\nX-A: a\nContent-Length: 5",
        b"GET / HTTP/1.1\r\nX-A: a\rb",
        b"GET / HTTP/1.1\r\nX-A: \x00",
    ],
)
def test_anything_but_the_plain_form_is_left_to_gunicorn(head):
    assert scan(head) is None


@pytest.fixture
def contended(monkeypatch):
    """Admission as the parser sees it; ``state["contended"]`` switches it."""
    state = {"contended": True}
    gate = SimpleNamespace(contended=lambda: state["contended"])
    monkeypatch.setattr(admission, "current", lambda: SimpleNamespace(gate=gate))
    return state


def _parser(*chunks: bytes) -> AdmissionParser:
    return AdmissionParser(Config(), list(chunks), ("127.0.0.1", 5000))


def test_while_contended_heads_are_scanned_not_parsed(contended, monkeypatch):
    parsed = []
    monkeypatch.setattr(
        AdmissionParser, "mesg_class", lambda *args: parsed.append(Request(*args))
    )
    parser = _parser(PLAIN + b"\r\n\r\n" + b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    first, second = next(parser), next(parser)
    assert type(first) is RawHead and first.path == "/demo/fan-out/"
    assert type(second) is RawHead and second.path == "/b"
    assert parsed == []


def test_a_head_split_over_reads_is_put_together(contended):
    head = next(_parser(b"GET /a?x=1 HT", b"TP/1.1\r\nHost: x\r", b"\n\r\n"))
    assert type(head) is RawHead
    assert (head.path, head.version, head.should_close()) == ("/a", (1, 1), False)


def test_an_admitted_head_is_parsed_by_gunicorn_with_its_body(contended):
    parser = _parser(
        b"POST /p?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    head = next(parser)
    assert type(head) is RawHead and head.should_close()
    request = head.parse()
    assert isinstance(request, Request)
    assert (request.method, request.path, request.query) == ("POST", "/p", "q=1")
    assert ("HOST", "x") in request.headers
    assert request.body.read() == b"hello"
    assert head.parsed is request
    assert next(parser).path == "/next"


def test_a_head_that_is_not_plain_goes_to_gunicorn(contended):
    parser = _parser(b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n")
    with pytest.raises(ObsoleteFolding):
        next(parser)


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % n for n in range(101)),
        b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n",
    ],
)
def test_a_head_past_gunicorns_limits_is_not_scanned(head):
    cfg = Config()
    end = head.rindex(b"\r\n")
    assert scan(head[:end], cfg.limit_request_fields, cfg.limit_request_line) is None
    assert scan(head[:end], 1000, 0) is not None


def test_a_head_longer_than_the_scan_takes_is_gunicorns_to_refuse(contended):
    many = b"".join(b"X-%d: %s\r\n" % (n, b"v" * 100) for n in range(200))
    parser = _parser(b"GET / HTTP/1.1\r\n" + many + b"\r\n")
    with pytest.raises(LimitRequestHeaders):
        next(parser)


def test_uncontended_requests_go_straight_to_gunicorn(contended):
    contended["contended"] = False
    parser = _parser(PLAIN + b"\r\n\r\n")
    assert isinstance(next(parser), Request)


def test_the_parser_is_used_only_for_plain_http1():
    cfg = Config()
    assert type(raw_head.get_parser(cfg, [], None)) is AdmissionParser
    cfg.set("proxy_protocol", "v1")
    assert type(raw_head.get_parser(cfg, [], None)) is not AdmissionParser
