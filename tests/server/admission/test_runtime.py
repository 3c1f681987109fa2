"""One worker's admission: settings, logs and metrics."""

import logging

from django.test import override_settings

from project.core import loop_turns
from project.core.route_priority import Priority
from project.server.admission import runtime
from project.server.admission.gate import Gate, GateConfig
from project.server.admission.limit import LimitConfig
from tests.metrics_samples import sample


def test_config_from_settings_uses_worker_connections_for_no_maximum(settings):
    """SHED_MAX_LIMIT 0 means the worker's connections; the queue timeout maps
    to seconds; a maximum under the minimum lowers the minimum to it."""
    settings.SHED_MAX_LIMIT = 0
    settings.SHED_QUEUE_TIMEOUT_MS = 30
    config = runtime.config_from_settings(settings, worker_connections=700)
    assert (config.limit.minimum, config.limit.maximum) == (4, 700)
    assert config.queue_timeout_s == 0.03
    assert config.queue_target_s == GateConfig.queue_target_s
    settings.SHED_MAX_LIMIT = 50
    assert runtime.config_from_settings(settings, 700).limit.maximum == 50
    settings.SHED_MAX_LIMIT = 1
    settings.SHED_QUEUE_TIMEOUT_MS = 2
    config = runtime.config_from_settings(settings, 700)
    assert (config.limit.minimum, config.limit.maximum) == (1, 1)
    assert config.queue_target_s == 0.002


@override_settings(SHED_ENABLED=False)
def test_install_returns_none_when_disabled():
    """SHED_ENABLED=false: no gate, every request goes straight through."""
    assert runtime.install(worker_connections=1000) is None


def refusing_gate() -> Gate:
    """A gate with a limit of 1, one request in and one refused."""
    gate = Gate(GateConfig(limit=LimitConfig(minimum=1, maximum=1)))
    gate.enter(Priority.NORMAL, 1e12)
    gate.enter(Priority.SHEDDABLE, -1.0)
    return gate


def test_shed_log_reports_once_per_interval_and_the_end(caplog):
    """A warning when shedding starts, none within 10 s, one when it stops."""
    gate = refusing_gate()
    log = runtime.ShedLog()
    with caplog.at_level(logging.WARNING, logger="project.admission"):
        log.on_tick(gate, now=100.0)
        gate.enter(Priority.SHEDDABLE, -1.0)
        log.on_tick(gate, now=101.0)
    assert len(caplog.records) == 1
    assert "shedding load: refused 1 request(s) (deadline 1)" in caplog.text
    gate._last_refusal = -1e9  # long ago: no longer shedding
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="project.admission"):
        log.on_tick(gate, now=102.0)
    assert "stopped shedding: refused 1 request(s)" in caplog.text


def test_gate_metrics_follow_the_gate():
    """Gauges are set and refusals added by their difference at each tick."""
    gate = refusing_gate()
    metrics = runtime.GateMetrics()
    before = sample("gd_admission_shed_total", reason="deadline", priority="sheddable")
    metrics.on_tick(gate)
    metrics.on_tick(gate)  # nothing new: nothing added
    after = sample("gd_admission_shed_total", reason="deadline", priority="sheddable")
    assert after - before == 1
    assert sample("gd_admission_limit") == 1
    assert sample("gd_admission_in_flight") == 1


def test_gate_metrics_count_borrowed_and_deferred_admissions():
    """Admissions above the limit for a fair share and refusals the budget
    deferred are counted by their difference; the need is a gauge."""
    gate = refusing_gate()
    metrics = runtime.GateMetrics()
    before = (
        sample("gd_admission_borrowed_total"),
        sample("gd_admission_deferred_total"),
    )
    gate.borrowed, gate.deferred, gate.need = 3, 2, 7.5
    metrics.on_tick(gate)
    metrics.on_tick(gate)
    assert sample("gd_admission_borrowed_total") - before[0] == 3
    assert sample("gd_admission_deferred_total") - before[1] == 2
    assert sample("gd_admission_needed") == 7.5


def test_turns_are_short_while_the_worker_sheds():
    """A refusal shortens the loop's turns (loop_turns) until the worker has
    not refused for ready_hold_s."""
    gate = refusing_gate()
    try:
        runtime.after_tick(gate, runtime.ShedLog(), None)
        assert loop_turns.short()
        gate._last_refusal = -1e9
        runtime.after_tick(gate, runtime.ShedLog(), None)
        assert not loop_turns.short()
    finally:
        loop_turns.shorten(False)
