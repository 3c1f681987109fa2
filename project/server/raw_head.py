"""A request's head read before gunicorn parses it, so a refusal skips the parse.

At three times its W1 capacity a worker refuses two requests for each it
serves, and a refusal cost 87 µs of its CPU while gunicorn parsed every
request (62 µs with the scan below; ``python -m loadtests.refusal_cost``,
medians of 3 rounds), CPU the admitted requests need. While the admission gate
is contended (a refusal is possible), ``AdmissionParser`` reads the next
request's head itself and scans only what admission needs (the path, the
version, the deadline, forwarding and framing headers); the worker decides on
that, and only an admitted request is parsed by gunicorn, from the same bytes.

The scan is strict, never lenient: a head it does not fully recognise (a
request line or header line out of the plain form, a bare CR or LF, a head
longer than ``MAX_HEAD``) goes to gunicorn's parser as if the scan had not
happened, with its own errors and limits. A refused request with any sign of
a body is answered with ``Connection: close``, so the next request on a kept
connection always starts where the scan says this one ended.
"""

import re
from typing import Any

from gunicorn import http as gunicorn_http
from gunicorn.http.parser import RequestParser

from project.server.admission import runtime as admission

# gunicorn's, for what AdmissionParser does not serve (get_parser replaces it).
_gunicorn_get_parser = gunicorn_http.get_parser

# A head longer than this is left to gunicorn, which applies its limits; as
# long as its field limit by default, no field of a scanned head can pass it.
MAX_HEAD = 8190
_END = b"\r\n\r\n"
_REQUEST_LINE = re.compile(rb"([A-Z]{1,20}) (/(?!/)[\x21-\x7e]*) HTTP/1\.([01])")
_HEADER_LINE = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*"
)
# The headers admission and framing read, as gunicorn spells names.
_WANTED = frozenset(
    {
        "CONNECTION",
        "CONTENT-LENGTH",
        "TRANSFER-ENCODING",
        "EXPECT",
        "UPGRADE",
        "X-FORWARDED-FOR",
        "X-REQUEST-TIMEOUT-MS",
    }
)
# Any of these makes a refusal close the connection (a body may follow).
_CLOSE_AFTER = frozenset({"TRANSFER-ENCODING", "EXPECT", "UPGRADE"})


class RawHead:
    """A scanned request head: what admission reads of a gunicorn request
    (``path``, ``version``, ``headers``, ``should_close``), and ``parse()``
    for the whole request once admitted."""

    __slots__ = (
        "_close",
        "_data",
        "_parser",
        "headers",
        "parsed",
        "path",
        "proxy_protocol_info",
        "version",
    )

    def __init__(
        self,
        parser: "AdmissionParser",
        data: bytes,
        path: str,
        version: tuple[int, int],
        headers: list[tuple[str, str]],
        close: bool,
    ) -> None:
        self._parser = parser
        self._data = data
        self.path = path
        self.version = version
        self.headers = headers
        self._close = close
        # gunicorn's keep-alive loop sets it; gunicorn's request once parsed.
        self.proxy_protocol_info: Any = None
        self.parsed: Any = None

    def should_close(self) -> bool:
        """Whether the connection closes after this request's answer."""
        return self._close

    def parse(self) -> Any:
        """gunicorn's request, parsed from this head's bytes (its errors too)."""
        self.parsed = self._parser.parse_head(self._data)
        return self.parsed


def scan(
    head: bytes, max_fields: int = 100, max_line: int = 4094
) -> tuple[str, tuple[int, int], list[tuple[str, str]], bool] | None:
    """``head`` (up to, not including, its blank line) as path, version,
    wanted headers and whether a refusal must close; None if not plain or
    past gunicorn's limits (``max_fields`` headers, a request line of
    ``max_line`` bytes; 0: none)."""
    if len(head) > MAX_HEAD:
        return None
    lines = head.split(b"\r\n")
    if len(lines) > max_fields + 1 or (max_line and len(lines[0]) > max_line):
        return None
    first = _REQUEST_LINE.fullmatch(lines[0])
    if first is None:
        return None
    version = (1, int(first.group(3)))
    path = first.group(2).split(b"?", 1)[0].split(b"#", 1)[0].decode("ascii")
    headers: list[tuple[str, str]] = []
    close = version == (1, 0)
    for line in lines[1:]:
        field = _HEADER_LINE.fullmatch(line)
        if field is None:
            return None
        name = field.group(1).decode("ascii").upper()
        if name not in _WANTED:
            continue
        value = field.group(2).decode("latin-1")
        headers.append((name, value))
        if name == "CONNECTION":
            tokens = {token.strip().lower() for token in value.split(",")}
            if "close" in tokens:
                close = True
            elif "keep-alive" in tokens and version == (1, 0):
                close = False
        elif name in _CLOSE_AFTER or (
            name == "CONTENT-LENGTH" and value.strip() != "0"
        ):
            close = True
    if sum(name == "CONTENT-LENGTH" for name, _ in headers) > 1:
        close = True
    return path, version, headers, close


class AdmissionParser(RequestParser):
    """gunicorn's request parser, returning a ``RawHead`` while admission is
    contended."""

    mesg: Any  # gunicorn's: the request last returned

    def __next__(self) -> Any:
        gate = admission.current()
        if gate is None or not gate.gate.contended():
            return super().__next__()
        if self.mesg and self.mesg.should_close():
            raise StopIteration()
        if not self.finish_body():
            raise StopIteration()
        self.mesg = None  # gunicorn's own checks above are done
        data = self._read_head()
        end = data.find(_END)
        cfg = self.cfg
        scanned = (
            scan(data[:end], cfg.limit_request_fields, cfg.limit_request_line)
            if end >= 0
            else None
        )
        self.unreader.unread(data[end + 4 :] if scanned is not None else data)
        if scanned is None:
            return super().__next__()
        return RawHead(self, data[: end + 4], *scanned)

    next = __next__

    def _read_head(self) -> bytes:
        # What is buffered, then the socket's chunks, until the head ends, the
        # client stops sending, or MAX_HEAD is passed.
        data = self.unreader.read()
        while data and len(data) <= MAX_HEAD and _END not in data:
            more = self.unreader.chunk()
            if not more:
                break
            data += more
        return data

    def parse_head(self, head: bytes) -> Any:
        """gunicorn's request from ``head`` put back in front of the rest."""
        self.unreader.unread(head)
        return super().__next__()


def get_parser(cfg: Any, source: Any, source_addr: Any, **kwargs: Any) -> Any:
    """``gunicorn.http.get_parser``, with ``AdmissionParser`` for plain HTTP/1."""
    if (
        kwargs.get("http2_connection")
        or getattr(cfg, "protocol", "http") != "http"
        or cfg.proxy_protocol != "off"
        or cfg.http2_cleartext in ("upgrade", "both")
    ):
        return _gunicorn_get_parser(cfg, source, source_addr, **kwargs)
    return AdmissionParser(cfg, source, source_addr)
