"""The canned refusal answers."""

import json

import pytest

from project.server.admission.refusal import Refusals


@pytest.mark.parametrize("reason", ["limit", "queue", "deadline"])
@pytest.mark.parametrize("close", [False, True])
def test_answer_is_a_complete_503_with_json_and_retry_after(reason, close):
    """A valid HTTP/1.1 503 whose length matches and whose body names the reason."""
    raw = Refusals(retry_after_s=2).answer(reason, close=close)
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 503 Service Unavailable"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Retry-After"] == "2"
    assert headers["X-Shed-Reason"] == reason
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == ("close" if close else "keep-alive")
    assert int(headers["Content-Length"]) == len(body)
    payload = json.loads(body)
    assert payload["error"] == "overloaded"
    assert payload["reason"] == reason
    assert payload["detail"]
