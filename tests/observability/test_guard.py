"""Who may read /metrics: tokens, addresses, nothing configured; the settings."""

import os
import secrets
import subprocess
import sys
from ipaddress import ip_network

import pytest
from django.test import override_settings
from prometheus_client import CONTENT_TYPE_LATEST

from settings import knobs
from settings.base import networks
from tests.helpers import BASE_DIR

TOKEN = "metrics-token-0123456789"
LOOPBACK = [ip_network("127.0.0.1/32"), ip_network("::1/128")]


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_loopback_reads_the_metrics_by_default(client):
    """Development and test: 127.0.0.1 is allowed; the Prometheus text format."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    assert b"# TYPE gd_http_requests_total counter" in response.content


@override_settings(METRICS_TOKENS=[], METRICS_ALLOW_IPS=[])
def test_nothing_configured_is_a_json_404(client):
    """Production's default: no endpoint at all, as for an unknown path."""
    response = client.get("/metrics")
    assert response.status_code == 404
    assert response.json() == {"error": "not found", "path": "/metrics"}


@override_settings(METRICS_TOKENS=[TOKEN], METRICS_ALLOW_IPS=[])
@pytest.mark.parametrize(
    "headers",
    [{}, bearer("wrong-token-0123456789"), {"HTTP_AUTHORIZATION": f"Basic {TOKEN}"}],
    ids=["none", "wrong", "not-bearer"],
)
def test_tokens_only_refuse_a_missing_or_wrong_token_with_401(client, headers):
    response = client.get("/metrics", **headers)
    assert response.status_code == 401
    assert response.json() == {"error": "a valid bearer token is required"}
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@override_settings(
    METRICS_TOKENS=["other-token-0123456789", TOKEN], METRICS_ALLOW_IPS=[]
)
def test_any_configured_token_is_accepted(client):
    assert client.get("/metrics", **bearer(TOKEN)).status_code == 200
    assert client.get("/metrics", **bearer(f"  {TOKEN} ")).status_code == 200


@override_settings(METRICS_TOKENS=[], METRICS_ALLOW_IPS=[ip_network("10.1.0.0/16")])
def test_addresses_only_match_remote_addr_not_forwarded_headers(client):
    """A CIDR block admits its addresses; X-Forwarded-For is not believed: 403."""
    allowed = client.get("/metrics", REMOTE_ADDR="10.1.200.7")
    assert allowed.status_code == 200
    refused = client.get(
        "/metrics", REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR="10.1.0.1"
    )
    assert refused.status_code == 403
    assert refused.json() == {"error": "this address may not read the metrics"}
    assert client.get("/metrics", REMOTE_ADDR="").status_code == 403


@override_settings(METRICS_TOKENS=[TOKEN], METRICS_ALLOW_IPS=LOOPBACK)
def test_either_a_token_or_an_address_is_enough(client):
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert (
        client.get("/metrics", REMOTE_ADDR="192.0.2.1", **bearer(TOKEN)).status_code
        == 200
    )
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.1").status_code == 401


def test_other_methods_are_a_json_405(client):
    response = client.generic("DELETE", "/metrics")
    assert response.status_code == 405
    assert response.json()["allowed"] == ["GET"]


def allow_ips(raw: str) -> list:
    return networks(knobs.read({"METRICS_ALLOW_IPS": raw})["METRICS_ALLOW_IPS"])


def metrics_tokens(raw: str) -> list[str]:
    return knobs.read({"METRICS_TOKENS": raw})["METRICS_TOKENS"]


def test_allow_ips_parses_addresses_and_blocks():
    assert allow_ips(" 127.0.0.1 , 10.0.0.0/8,, ::1") == [
        ip_network("127.0.0.1/32"),
        ip_network("10.0.0.0/8"),
        ip_network("::1/128"),
    ]
    assert allow_ips(" , ") == []  # set, and nobody
    with pytest.raises(knobs.KnobError, match="METRICS_ALLOW_IPS: .*'10.0.0.300'"):
        allow_ips("10.0.0.300")


def test_metrics_tokens_share_the_api_token_rules():
    """Stripped, 16+ characters, no empty one; the message names the key."""
    assert metrics_tokens(f" {TOKEN} ") == [TOKEN]
    with pytest.raises(knobs.KnobError, match="^METRICS_TOKENS: every token"):
        metrics_tokens("short")
    with pytest.raises(knobs.KnobError, match="^METRICS_TOKENS has an empty"):
        metrics_tokens(f"{TOKEN},")


@pytest.mark.parametrize(
    ("allow", "expected"), [("", "[]"), ("10.1.0.0/16", "['10.1.0.0/16']")]
)
def test_production_allows_no_address_unless_configured(allow, expected):
    """Production has no loopback default: /metrics is off until configured."""
    code = (
        "import settings.production as s;"
        "print([str(n) for n in s.METRICS_ALLOW_IPS], s.METRICS_TOKENS)"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "METRICS_"))
    }
    env.update(
        ENVIRONMENT="production",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="example.org",
        DATABASE_URL="postgres://nobody@127.0.0.1:1/none",
        AGGREGATIONS_FILE=str(BASE_DIR / "examples" / "aggregations.toml"),
        METRICS_ALLOW_IPS=allow,
        METRICS_TOKENS="",
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.strip() == f"{expected} []"
