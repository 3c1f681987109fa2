"""The workloads of ``python -m loadtests.bench``, by the name ``--workload`` takes."""

from loadtests.harness.workloads.aggregate import Aggregate
from loadtests.harness.workloads.base import Workload
from loadtests.harness.workloads.fanout import FanOut
from loadtests.harness.workloads.slow_sql import SlowSql

WORKLOADS: dict[str, Workload] = {w.name: w for w in (FanOut(), SlowSql(), Aggregate())}
