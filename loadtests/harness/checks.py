"""Response checks shared by locustfiles (status and body shape), and the
refusal handling the harness user and the commands agree on; no locust import."""


def check_fan_out(response, legs: int) -> None:
    """Fail ``response`` unless it is a 200 with ``legs`` legs, all ok."""
    if response.status_code != 200:
        response.failure(f"status {response.status_code}")
        return
    body = response.json()
    if body.get("ok") != legs or len(body.get("legs", [])) != legs:
        failed = [leg for leg in body.get("legs", []) if leg.get("status") != "ok"]
        response.failure(f"{len(failed)} of {legs} legs not ok: {failed[:1]!r}")


SHED_SUFFIX = " shed"
# What a closed-model user does after a refusal: wait for its Retry-After (a
# polite client), or send the next request at once (wrk, most retry loops).
RETRY_POLICIES = ("retry-after", "at-once")
# Successful answers within --slo-ms are counted again under NAME + this.
GOODPUT_SUFFIX = " within SLO"


def record_shed(response) -> bool:
    """True when ``response`` is the server refusing the request under overload.

    A refusal (503 with ``X-Shed-Reason``) is the server working as designed:
    it is reported under ``NAME shed`` as a success, so the endpoint's own
    figures are the admitted requests' and the refusals get their own
    percentiles (how fast a refused client learns it should back off).
    """
    if response.status_code != 503 or "X-Shed-Reason" not in response.headers:
        return False
    response.request_meta["name"] += SHED_SUFFIX
    response.success()
    return True
