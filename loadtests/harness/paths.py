"""Where the load-test files are, so no module works a path out for itself."""

from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
LOADTESTS = BASE_DIR / "loadtests"
LOCUSTFILES = LOADTESTS / "locustfiles"
GUARDS_FILE = LOADTESTS / "guards.toml"
LOCUST_CONF = LOADTESTS / "locust.conf"
AGGREGATIONS_BENCH = LOADTESTS / "aggregations_bench.toml"
# Given to Locust after a scenario's locustfile, by path: it is not a scenario.
STEP_SHAPE = LOADTESTS / "harness" / "step_shape.py"
REPORTS = BASE_DIR / "reports"
