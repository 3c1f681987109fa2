"""The user every scenario subclasses: closed model, or open model on a schedule."""

import time

import gevent
import gevent.pool
from locust import FastHttpUser, constant, task
from locust.user.task import LOCUST_STATE_STOPPING

from loadtests.harness.checks import record_shed
from loadtests.harness.recorder import RECORDER

# An open-model request that starts this much after its slot is counted as late.
LATE_AFTER_S = 0.010
# Most requests one open-model user keeps in flight (and HTTP connections it opens).
MAX_IN_FLIGHT = 200


class ScenarioUser(FastHttpUser):
    """A scenario's user: ``request()`` back to back, or on a schedule (open model).

    Closed model (default): each user calls ``request()`` again as soon as the
    previous answer arrives. Open model (``--arrival-rate R``): each of the ``-u``
    users starts ``R / users`` requests a second on a fixed schedule, each in its
    own greenlet, so a slow server does not slow the arrivals (no coordinated
    omission); a start more than 10 ms late (in-flight limit reached or the
    load generator saturated) is counted as late. ``--request-timeout-ms``
    sends every request with that deadline.

    A refusal (``shed``) is reported apart. What the closed-model user does
    next is ``--retry-policy``: ``retry-after`` (default) backs off for the
    answer's ``Retry-After`` as a well-behaved client does; ``at-once`` sends
    the next request straight away, as wrk and most retry loops do, which is
    the load a server's admission control must not turn into a loop of
    instant 503s.
    """

    abstract = True
    wait_time = constant(0)
    concurrency = MAX_IN_FLIGHT

    def __init__(self, environment) -> None:
        options = environment.parsed_options
        timeout_ms = getattr(options, "request_timeout_ms", 0) if options else 0
        if timeout_ms:
            # Every request carries the client's deadline: the server refuses
            # what it cannot finish in time instead of answering too late.
            self.default_headers = {"X-Request-Timeout-Ms": str(timeout_ms)}
        super().__init__(environment)
        self._backoff_s = 0.0
        policy = getattr(options, "retry_policy", "retry-after") if options else ""
        self._honours_retry_after = policy != "at-once"

    def request(self) -> None:
        """One request of the scenario, response checked; subclasses define it."""
        raise NotImplementedError

    def shed(self, response) -> bool:
        """True when ``response`` is a refusal, reported as ``NAME shed``."""
        if not record_shed(response):
            return False
        if not self._honours_retry_after:
            return True
        try:
            self._backoff_s = float(response.headers.get("Retry-After", 1))
        except ValueError:
            self._backoff_s = 1.0
        return True

    @task
    def drive(self) -> None:
        """Closed model: one request. Open model: the schedule, until stopped."""
        options = self.environment.parsed_options
        rate = options.arrival_rate if options else 0
        if not rate:
            self.request()
            if self._backoff_s:
                gevent.sleep(self._backoff_s)
                self._backoff_s = 0.0
            return
        users = getattr(options, "harness_users", None) or options.num_users or 1
        self._open_loop(rate / users)

    def _open_loop(self, rate: float) -> None:
        pool = gevent.pool.Pool(MAX_IN_FLIGHT)
        interval = 1.0 / rate
        due = time.monotonic()
        # Stop scheduling as soon as the run ends (the in-flight ones may finish).
        while self._state != LOCUST_STATE_STOPPING:
            delay = due - time.monotonic()
            if delay > 0:
                gevent.sleep(delay)
            pool.wait_available()
            RECORDER.scheduled += 1
            if time.monotonic() - due > LATE_AFTER_S:
                RECORDER.late += 1
            pool.spawn(self.request)
            due += interval
        pool.join()
