"""The capacity report from synthetic steps (loadtests.capacity), no load run."""

import csv

import pytest

from loadtests import capacity
from loadtests.harness import (
    capacity_report,
    resources,
    resources_report,
    saturation,
    usl,
)
from loadtests.openloop import Run


def synthetic_steps() -> list[dict]:
    """Steps following a known USL curve, p95 rising past 200 ms at 60 users."""
    steps = []
    for users in (10, 20, 30, 40, 50, 60):
        rps = float(usl.throughput(users, 20.0, 0.02, 0.0005))
        p95 = 1000.0 * users / rps * 1.5
        steps.append(
            {
                "users": users,
                "rps": rps,
                "p50_ms": p95 / 1.5,
                "p95_ms": p95,
                "p99_ms": p95 * 1.2,
                "fail_ratio": 0.0,
            }
        )
    return steps


def test_report_files_and_recommendation(tmp_path):
    """CSV, PNG and Markdown are written; the Markdown ends with the recommendation."""
    args = capacity.parse_args(["--target-rps", "2000", "--workers", "2"])
    steps = synthetic_steps()
    fit = usl.fit([s["users"] for s in steps], [s["rps"] for s in steps])
    knee = usl.knee(steps, args.slo_p95_ms, args.slo_fail_ratio)
    per_host = capacity_report.planned_rps(knee, fit)
    plan = usl.plan(
        target_rps=2000, per_host_rps=per_host, workers_per_host=2, cores_per_host=2
    )
    sentence = capacity_report.recommendation(plan, knee, fit, args)
    capacity_report.write_csv(tmp_path / "c.csv", steps, fit)
    capacity_report.plot(tmp_path / "c.png", steps, fit, knee, args)
    text = capacity_report.markdown(steps, fit, knee, sentence, args)

    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert [int(r["users"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert abs(float(rows[2]["usl_rps"]) - steps[2]["rps"]) < 1
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    assert text.rstrip().endswith(sentence)
    assert sentence.startswith("To serve 2,000 req/s of W1 at p95 < 200 ms you need")
    assert f"{plan.workers} gevent workers" in sentence
    assert "σ = 0.0200" in text


def test_plan_takes_the_lower_of_step_and_fit():
    """A lucky step above the fitted curve does not inflate the per-host figure."""
    fit = usl.Fit(20.0, 0.02, 0.0005)
    expected = float(fit(40))
    lucky = {"users": 40, "rps": expected * 1.2}
    unlucky = {"users": 40, "rps": expected * 0.9}
    assert capacity_report.planned_rps(lucky, fit) == expected
    assert capacity_report.planned_rps(unlucky, fit) == unlucky["rps"]
    assert capacity_report.planned_rps(lucky, None) == lucky["rps"]


def test_resources_in_csv_markdown_and_plot(tmp_path):
    """Steps with resource figures: CSV columns, a table, the verdict and a plot."""
    args = capacity.parse_args(["--workers", "2"])
    steps = synthetic_steps()
    for number, step in enumerate(steps):
        figures = {
            "metrics": number != 0,  # the first step's scrapes all failed
            "cpu_util": 0.2 + 0.2 * number,
            "loop_lag_p99_ms": 5.0 * number,
            "db_in_use_max": 3.0,
            "db_size": 64.0,
            "db_wait_p95_ms": 0.1,
            "breaker_opens": 0.0,
        }
        figures["utilisation"] = saturation.utilisation(figures)
        figures["saturated"] = saturation.saturated(figures)
        step["resources"] = figures
    knee = usl.knee(steps, args.slo_p95_ms, args.slo_fail_ratio)
    verdict = saturation.verdict(steps, knee)
    capacity_report.write_csv(tmp_path / "c.csv", steps, None)
    resources_report.plot(tmp_path / "r.png", steps, knee, args)
    text = capacity_report.markdown(steps, None, knee, "Plan.", args, verdict=verdict)

    # CPU crosses 90 % in the step after the knee, the one past the SLO.
    assert knee["users"] == 40 and verdict.startswith(
        "the knee at 40 users is CPU-bound (past its threshold at 50 users): "
        "workers at 80 % CPU, loop lag p99 15 ms; DB pool 5 % used"
    )
    rows = list(csv.DictReader((tmp_path / "c.csv").open()))
    assert list(rows[0])[:7] == capacity_report.COLUMNS
    assert rows[0]["metrics"] == "False" and rows[4]["saturated"] == "CPU"
    assert float(rows[3]["cpu_util"]) == 0.8 and rows[4]["db_size"] == "64.0"
    assert "| 10 | 20% | - | no metrics | - | - | - | - | - | - | - |" in text
    assert "| 40 | 80% | - | 15.0 | 3 / 64 | 0.1 | - | - | - | 0 | - |" in text
    assert "| 50 | 100% | - | 20.0 | 3 / 64 | 0.1 | - | - | - | 0 | CPU |" in text
    assert "The knee at 40 users is CPU-bound" in text
    assert text.rstrip().endswith("Plan.")
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_measured_steps_keep_their_resources():
    """A step's resource figures survive flattening; a step without requests goes."""
    result = {
        "steps": [
            {"users": 10, "stats": {"requests": 5, "rps": 1.0}, "resources": {"x": 1}},
            {"users": 20, "stats": {"requests": 0, "rps": 0.0}},
        ]
    }
    assert capacity.measured_steps(result) == [
        {"users": 10, "requests": 5, "rps": 1.0, "resources": {"x": 1}}
    ]


def test_beyond_the_knee_sentence():
    """Refused share, admitted and refusal p99, goodput against the knee."""
    args = capacity.parse_args(["--slo-p95-ms", "250", "--beyond-seconds", "30"])
    stats = {
        "/x": {"requests": 1000, "p99_ms": 120.0},
        "/x shed": {"requests": 3000, "p99_ms": 6.0},
        "/x within SLO": {"rps": 180.0},
    }
    knee = {"rps": 200.0, "p99_ms": 70.0}
    sentence = capacity.overload_sentence(stats, "/x", knee, "3 x 200 req/s", args)
    assert sentence == (
        "3 x 200 req/s offered (open model, 30 s): sheds 75.0%, admitted p99 "
        "120 ms (at the knee 70 ms), refusals p99 6 ms; goodput 180 req/s within "
        "250 ms (90% of the knee)."
    )
    assert capacity.overload_sentence({}, "/x", knee, "", args).startswith("no ")


def test_through_the_front_door_per_instance_and_proxy_cost():
    """With --target the report states the knee's req/s per instance and the
    proxy's CPU per request; without --proxy-pid it says it was not sampled."""
    url = "http://127.0.0.1:8080"
    args = capacity.parse_args(
        ["--target", url, "--instances", "3", "--proxy-pid", "4321", "--workers", "2"]
    )
    knee = {
        "users": 40,
        "rps": 900.0,
        "p50_ms": 90.0,
        "p95_ms": 150.0,
        "p99_ms": 190.0,
        "fail_ratio": 0.0,
        "resources": {"proxy_cpu_cores": 0.09, "proxy_ms_per_request": 0.1},
    }
    sentence = capacity_report.front_door(knee, args)
    assert sentence == (
        f"Through {url}: 300 req/s per instance at the knee (900 req/s / 3 "
        "instance(s)); the proxy used 0.100 ms CPU per request (0.09 cores)."
    )
    text = capacity_report.markdown([knee], None, knee, "Plan.", args)
    assert sentence in text
    assert f"{url} (not started here: 3 instance(s) of 2 workers" in text
    # The plan counts every instance's workers on this host.
    assert capacity_report.workers_per_host(args) == 6
    bare = capacity.parse_args(["--target", url])
    assert capacity_report.front_door({"rps": 500.0}, bare).endswith(
        "(500 req/s / 1 instance(s)); proxy CPU not sampled (no --proxy-pid)."
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--instances", "2"],
        ["--server-pids", "12"],
        ["--proxy-pid", "12"],
        ["--target", "http://127.0.0.1:1", "--env", "A=1"],
        ["--target", "127.0.0.1:1"],
        ["--target", "http://127.0.0.1:1", "--server-pids", "12,x"],
    ],
)
def test_target_options_are_checked(argv, capsys):
    """Target-only options need --target; server settings refuse one."""
    with pytest.raises(SystemExit) as exit_info:
        capacity.parse_args(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("busy", "target"), [(0.75, "600m"), (0.7, "560m"), (0.35, "280m"), (1.0, "800m")]
)
def test_hpa_target_is_the_knees_loop_busy_ratio_less_a_fifth(busy, target):
    """The HPA target printed: the knee's mean busy ratio x 0.8, in milli-units
    (rounded: 0.7 x 0.8 x 1000 is 559.99... in floating point)."""
    knee = {"users": 40, "rps": 900.0, "resources": {"loop_busy_mean": busy}}
    line = capacity.hpa_target(knee)
    assert line.startswith(
        f"HPA target: gd_admission_loop_busy_ratio averageValue {target} "
    ), line
    assert f"the knee's {busy:.2f}" in line


@pytest.mark.parametrize(
    "resources", [None, {}, {"loop_busy_mean": None}, {"loop_busy_mean": 0.0}]
)
def test_hpa_target_is_unknown_without_the_busy_ratio(resources):
    """No busy ratio scraped at the knee (or only zeros: admission off, the
    gauge never set): no made-up target."""
    knee = {"users": 40, "rps": 900.0}
    if resources is not None:
        knee["resources"] = resources
    assert capacity.hpa_target(knee).startswith("HPA target: unknown")


def test_loop_busy_mean_is_the_windows_mean_over_the_scrapes_that_have_it():
    """The knee's busy ratio: the mean of the window's scrapes of the gauge
    (one livemax series per server), a scrape without it left out."""
    scraped = [
        {resources.LOOP_BUSY: [({}, 0.5)]},
        {},
        {resources.LOOP_BUSY: [({}, 0.7)]},
    ]
    assert resources.metric_figures(scraped)["loop_busy_mean"] == pytest.approx(0.6)
    assert resources.metric_figures([{}])["loop_busy_mean"] is None


def test_beyond_the_knee_sentence_from_h2load():
    """The same figures from an h2load run: 2xx within the SLO are goodput,
    later ones are admitted but not good."""
    args = capacity.parse_args(["--slo-p95-ms", "200", "--beyond-seconds", "10"])
    rows = [(0.0, 200, 80.0)] * 1800 + [(0.0, 200, 300.0)] * 200
    rows += [(0.0, 503, 4.0)] * 6000
    run = Run(800.0, 10.0, rows)
    knee = {"rps": 200.0, "p99_ms": 70.0}
    sentence = capacity.open_model_sentence(run, knee, "4 x 200 req/s", args)
    assert sentence == (
        "4 x 200 req/s offered (open model, h2load, 10 s, 800 req/s sent): sheds "
        "75.0%, admitted p99 300 ms (at the knee 70 ms), refusals p99 4 ms; "
        "goodput 180 req/s within 200 ms (90% of the knee)."
    )
    empty = Run(800.0, 10.0, [])
    assert capacity.open_model_sentence(empty, knee, "", args).startswith("no ")
