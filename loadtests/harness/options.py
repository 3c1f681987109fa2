"""The command-line options the harness adds to Locust; all optional.

A locustfile run as plain Locust (no ``--scenario``) has no guards and Locust's
own exit codes apply.
"""

from locust import events

from loadtests.harness.checks import RETRY_POLICIES
from loadtests.harness.paths import GUARDS_FILE


@events.init_command_line_parser.add_listener
def _add_options(parser) -> None:
    parser.add_argument("--scenario", default="", help="guards.toml scenario to check")
    parser.add_argument("--guards", default=str(GUARDS_FILE), help="guards file")
    parser.add_argument(
        "--steady-json", default="", help="write steady-state results here"
    )
    parser.add_argument(
        "--warmup", type=float, default=-1.0, help="seconds trimmed after spawning"
    )
    parser.add_argument(
        "--arrival-rate", type=float, default=0.0, help="open model: total req/s"
    )
    parser.add_argument(
        "--slo-ms",
        type=float,
        default=250.0,
        help="answers within this are goodput (NAME within SLO)",
    )
    parser.add_argument(
        "--request-timeout-ms",
        type=int,
        default=0,
        help="send X-Request-Timeout-Ms: the requests' deadline (0: the server's)",
    )
    parser.add_argument(
        "--retry-policy",
        choices=RETRY_POLICIES,
        default="retry-after",
        help="after a refusal: wait Retry-After, or retry at once",
    )
    parser.add_argument(
        "--capacity-rps",
        type=float,
        default=0.0,
        help="capacity measured before the run, for min_capacity_ratio guards",
    )
    parser.add_argument(
        "--upstream-url", default="", help="stub upstream, timed directly as a baseline"
    )
    parser.add_argument(
        "--step-users", type=int, default=0, help="users added per step"
    )
    parser.add_argument("--step-seconds", type=float, default=20.0)
    parser.add_argument(
        "--step-trim", type=float, default=5.0, help="ramp cut per step"
    )
    parser.add_argument("--step-count", type=int, default=10, help="most steps")
    parser.add_argument(
        "--slo-p95-ms", type=float, default=200.0, help="stop steps above"
    )
    parser.add_argument(
        "--slo-fail-ratio", type=float, default=0.01, help="...or above"
    )
