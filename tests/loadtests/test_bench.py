"""The bench driver's options, servers and tables (loadtests.bench), no load run."""

from pathlib import Path

import pytest

from loadtests import bench
from loadtests.harness import bench_report
from loadtests.harness.paths import BASE_DIR
from loadtests.harness.workloads import WORKLOADS
from loadtests.harness.workloads import slow_sql as slow_sql_workload


def test_parser_reads_user_levels_and_defaults() -> None:
    """``--users 5,50`` is [5, 50]; defaults: 3 rounds of 20 s at 10/100/400 users."""
    args = bench.parse_args(["--workload", "W1", "--users", "5,50", "--rounds", "1"])
    assert (args.users, args.rounds, args.seconds) == ([5, 50], 1, 20)
    assert bench.parse_args(["--workload", "W2"]).users == [10, 100, 400]
    with pytest.raises(SystemExit):
        bench.parse_args(["--workload", "W1", "--users", "ten"])


def test_compare_takes_the_old_spellings_once_each() -> None:
    """``--asyncio`` and ``--baseline REV`` are ``--compare``; repeats count once."""
    argv = ["--workload", "W1", "--asyncio", "--baseline", "abc"]
    assert bench.parse_args([*argv, "--compare", "asyncio"]).compare == [
        "asyncio",
        "abc",
    ]


def test_compare_env_runs_this_tree_again_with_the_override() -> None:
    """``env:K=V[,K=V]`` is this tree with those settings, never a checkout."""
    args = bench.parse_args(
        ["--workload", "W1", "--compare", "env:METRICS_ENABLED=false,X_Y= 2"]
    )
    servers = WORKLOADS["W1"].servers(args.compare, {}, "")
    assert [(s.label, s.mode, s.tree, s.env) for s in servers[1:]] == [
        (
            "env:METRICS_ENABLED=false,X_Y= 2",
            "gevent",
            BASE_DIR,
            {"METRICS_ENABLED": "false", "X_Y": "2"},
        )
    ]
    w2 = WORKLOADS["W2"].servers(["env:METRICS_ENABLED=false"], {}, "postgres://")
    assert [(s.label, s.env) for s in w2] == [
        ("gevent", {}),
        ("env:METRICS_ENABLED=false", {"METRICS_ENABLED": "false"}),
    ]


@pytest.mark.parametrize("item", ["env:", "env:METRICS_ENABLED", "env:=1"])
def test_compare_env_refuses_a_malformed_pair(item: str, capsys) -> None:
    """A pair without ``=`` or a key is an error naming it."""
    with pytest.raises(SystemExit):
        bench.parse_args(["--workload", "W1", "--compare", item])
    assert "is not KEY=VALUE" in capsys.readouterr().err


@pytest.mark.parametrize("workload", ["W2", "AGG"])
@pytest.mark.parametrize("rival", ["asyncio", "floor"])
def test_the_fan_out_rivals_serve_w1_only(workload: str, rival: str, capsys) -> None:
    """The asyncio and floor rivals answer the fan-out only: other workloads
    refuse them."""
    with pytest.raises(SystemExit):
        bench.parse_args(["--workload", workload, "--compare", rival])
    message = f"the {rival} rival serves W1 only, not {workload}"
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("workload", ["W1", "AGG"])
def test_the_pg3pool_rival_serves_w2_only(workload: str, capsys) -> None:
    """Django's own pool answers the slow-SQL probe only: other workloads refuse it."""
    with pytest.raises(SystemExit):
        bench.parse_args(["--workload", workload, "--compare", "pg3pool"])
    message = f"the pg3pool rival serves W2 only, not {workload}"
    assert message in capsys.readouterr().err
    assert bench.parse_args(["--workload", "W2", "--compare", "pg3pool"]).compare == [
        "pg3pool"
    ]


def test_pg3pool_runs_against_our_pool_on_its_budget() -> None:
    """``--compare pg3pool``: our pool of 32 and the rival on the same 32
    connections a worker, compared with each other; an ``env:`` override too."""
    w2 = WORKLOADS["W2"]
    servers = w2.servers(["pg3pool", "env:SHED_ENABLED=false"], {}, "postgres://")
    assert [(s.label, s.mode, s.env) for s in servers] == [
        ("gevent", "gevent", {}),
        ("gevent pool 32", "gevent", {"DB_POOL_SIZE": "32"}),
        ("pg3pool", "pg3pool", {"DB_POOL_SIZE": "32"}),
        ("env:SHED_ENABLED=false", "gevent", {"SHED_ENABLED": "false"}),
    ]
    assert w2.comparisons(servers) == [
        ("gevent pool 32 / pg3pool", "gevent pool 32", "pg3pool"),
        ("env:SHED_ENABLED=false / pg3pool", "env:SHED_ENABLED=false", "pg3pool"),
    ]


def test_bench_db_runs_gthread_and_pg3pool(monkeypatch) -> None:
    """make bench-db's list: the four runs of gthread, then pg3pool; our pool of
    32 runs once and meets both rivals."""
    monkeypatch.setattr(slow_sql_workload, "default_pool_size", lambda url: 143)
    w2 = WORKLOADS["W2"]
    servers = w2.servers(["gthread", "pg3pool"], {}, "postgres://")
    assert [s.label for s in servers] == [
        "gevent",
        "gthread",
        "gevent pool 32",
        "gthread 143 threads",
        "pg3pool",
    ]
    assert [c[0] for c in w2.comparisons(servers)] == [
        "defaults",
        "budget of gthread",
        "budget of gevent",
        "gevent pool 32 / pg3pool",
    ]


def test_the_floor_is_a_server_of_its_own_mode() -> None:
    """``--compare floor`` adds the floor, compared with this tree."""
    servers = WORKLOADS["W1"].servers(["floor"], {}, "")
    assert [(s.label, s.mode) for s in servers] == [
        ("this tree", "gevent"),
        ("floor", "floor"),
    ]
    assert WORKLOADS["W1"].comparisons(servers) == [
        ("this tree / floor", "this tree", "floor")
    ]


def test_w1_servers_and_comparisons() -> None:
    """This tree first, then each --compare in order; ratios against this tree."""
    trees = {"abc": Path("/tmp/tree-abc")}
    servers = WORKLOADS["W1"].servers(["asyncio", "abc"], trees, "")
    assert [(s.label, s.mode, s.tree) for s in servers[1:]] == [
        ("asyncio", "asyncio", BASE_DIR),
        ("abc", "gevent", trees["abc"]),
    ]
    assert WORKLOADS["W1"].comparisons(servers) == [
        ("this tree / asyncio", "this tree", "asyncio"),
        ("this tree / abc", "this tree", "abc"),
    ]


def test_w2_against_gthread_and_a_revision(monkeypatch) -> None:
    """gthread brings the four runs of bench-db; a revision runs a pool of 32."""
    monkeypatch.setattr(slow_sql_workload, "default_pool_size", lambda url: 143)
    trees = {"abc": Path("/tmp/tree-abc")}
    servers = WORKLOADS["W2"].servers(["gthread", "abc"], trees, "postgres://")
    assert [s.label for s in servers] == [
        "gevent",
        "gthread",
        "gevent pool 32",
        "gthread 143 threads",
        "abc pool 32",
    ]
    assert servers[3].args == ("--threads", "143")
    assert servers[4].env == {"DB_POOL_SIZE": "32"}
    assert [c[0] for c in WORKLOADS["W2"].comparisons(servers)] == [
        "defaults",
        "budget of gthread",
        "budget of gevent",
        "this tree / abc pool 32",
    ]
    alone = WORKLOADS["W2"].servers(["abc"], trees, "postgres://")
    assert [s.label for s in alone] == ["gevent", "gevent pool 32", "abc pool 32"]


def test_tables_print_medians_and_same_round_ratios(capsys) -> None:
    """Medians per (users, server); ratios are medians of per-round quotients."""
    workload = WORKLOADS["W1"]
    servers = workload.servers(["asyncio"], {}, "")

    def run(rps: float, cpu: float) -> dict:
        figures = {"p50": 50, "p99": 90, "failures": 0, "shed": 0, "connections": 100}
        return {**figures, "rps": rps, "cpu_ms": cpu, "excess": 0, "top_error": ""}

    results = {
        ("this tree", 10): [run(200, 2.0), run(180, 2.0), run(100, 3.0)],
        ("asyncio", 10): [run(100, 4.0), run(100, 4.0), run(100, 3.0)],
    }
    args = bench.parse_args(["--workload", "W1", "--users", "10"])
    bench_report.print_medians(workload, servers, args, results)
    bench_report.print_ratios(workload, workload.comparisons(servers), [10], results)
    out = capsys.readouterr().out
    assert "| 10 | this tree | 180 | 50 | 90 | 0 | 0 | 2.00 | 100 | 0 |" in out
    assert "| 10 | this tree / asyncio | 1.80x | 2.00x |" in out


def test_each_server_is_warmed_before_it_is_measured(tmp_path) -> None:
    """A short run at the first user level comes first and is discarded: on a
    cold server the first burst of connections lands on one worker and stays."""
    calls: list[tuple[int, int, str]] = []

    class Recording:
        def measure(self, target, users, seconds, report_dir) -> dict:
            calls.append((users, seconds, report_dir.name))
            return {"users": users}

    levels = bench.measure_warm(Recording(), None, [100, 400], 10, tmp_path)
    assert calls == [
        (100, bench.WARMUP_S, "warmup"),
        (100, 10, "u100"),
        (400, 10, "u400"),
    ]
    assert levels == [(100, {"users": 100}), (400, {"users": 400})]
