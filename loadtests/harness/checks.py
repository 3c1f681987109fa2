"""Response checks shared by locustfiles (status and body shape)."""


def check_fan_out(response, legs: int) -> None:
    """Fail ``response`` unless it is a 200 with ``legs`` legs, all ok."""
    if response.status_code != 200:
        response.failure(f"status {response.status_code}")
        return
    body = response.json()
    if body.get("ok") != legs or len(body.get("legs", [])) != legs:
        failed = [leg for leg in body.get("legs", []) if leg.get("status") != "ok"]
        response.failure(f"{len(failed)} of {legs} legs not ok: {failed[:1]!r}")
