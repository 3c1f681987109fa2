"""The demo's upstream leg, against the real stub upstream."""

import pytest

from project.demo.services import UpstreamError, _http_leg


@pytest.mark.parametrize("code", [301, 302, 404, 503])
def test_anything_but_2xx_is_a_failed_leg(upstream, code):
    """Nothing follows redirects, so a 3xx fails the leg like a 4xx or 5xx."""
    leg = _http_leg(f"{upstream}/status?code={code}&ms=0")
    with pytest.raises(UpstreamError, match=f"upstream answered {code}"):
        leg.call(2.0)


def test_a_2xx_is_an_ok_leg(upstream):
    """A 200 is the leg's answer."""
    assert _http_leg(f"{upstream}/delay?ms=0").call(2.0) == {"http_status": 200}
