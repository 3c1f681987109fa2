"""deploy/nginx.conf's retry rules, read as text (the stack tests run it live)."""

import re

from tests.helpers import BASE_DIR


def directive(name: str) -> list[str]:
    """The arguments of the one ``name`` directive in deploy/nginx.conf."""
    text = (BASE_DIR / "deploy" / "nginx.conf").read_text()
    found = re.findall(rf"^\s*{name}\s+([^;]*);", text, flags=re.MULTILINE)
    assert len(found) == 1, found
    return found[0].split()


def test_an_instance_shedding_load_is_not_taken_out():
    """nginx counts what proxy_next_upstream lists towards max_fails: a 503
    (admission control refusing work, with Retry-After) or a 502 the app sends
    for a bad upstream of its own must not take an instance out of rotation,
    or under overload both are out and every request gets nginx's own 502."""
    conditions = directive("proxy_next_upstream")
    assert conditions == ["error", "timeout"]


def test_non_idempotent_requests_are_never_retried():
    """A POST an instance may have acted on is not sent to the other one."""
    assert "non_idempotent" not in directive("proxy_next_upstream")
