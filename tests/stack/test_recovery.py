"""PostgreSQL restarts behind PgBouncer: the service is back at once."""

import time

from tests.stack.helpers import RunningStack, SteadyLoad

# What the clients allow each request (X-Request-Timeout-Ms): well above a
# query's few milliseconds, well below the 15 s PgBouncer once waited.
DEADLINE_MS = 3000


def test_the_service_recovers_within_2_s_of_postgres(stack: RunningStack):
    """PostgreSQL restarted under 10 clients: the 503s (requests that were in
    PostgreSQL when it stopped) end within 2 s of it accepting connections
    again, and every request answers within its deadline."""
    from project import embedded_pg

    with SteadyLoad(
        stack.url + "/demo/slow-sql/?x=3&ms=2",
        clients=10,
        headers={"X-Request-Timeout-Ms": str(DEADLINE_MS)},
    ) as load:
        time.sleep(1)
        embedded_pg.restart(embedded_pg.TEST_DATA_DIR)  # returns once it accepts
        accepting = time.monotonic()
        time.sleep(4)
    assert load.requests > 200
    outcomes = {outcome for _, _, outcome in load.results}
    assert outcomes <= {200, 503}, outcomes
    last_failure = max(
        (ended for _, ended, outcome in load.results if outcome != 200),
        default=accepting,
    )
    assert last_failure - accepting < 2.0, f"503s for {last_failure - accepting:.1f} s"
    longest = max(ended - started for started, ended, _ in load.results)
    assert longest < DEADLINE_MS / 1000 + 0.5, f"a request took {longest:.1f} s"
    after = [outcome for started, _, outcome in load.results if started > accepting + 2]
    assert after and set(after) == {200}
