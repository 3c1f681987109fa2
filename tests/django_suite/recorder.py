"""The ``TEST_RUNNER`` of the conformance runs: writes every test's outcome to JSON.

``DJANGO_SUITE_RESULTS`` names the file. It holds ``{"finished": bool, "tests":
{test id: {"outcome": ..., "message": ...}}}``; ``finished`` turns true only
once the test databases are torn down, so a run that crashed after its tests
is told apart from one that completed. Runs are serial (``--parallel 1``, see
``run.py``), so results never cross processes.
"""

import json
import os
import unittest
from pathlib import Path
from typing import Any

from django.test.runner import DiscoverRunner

# When a test reports several outcomes (subtests), the worst one stands.
OUTCOMES = ("skip", "expected failure", "ok", "unexpected success", "fail", "error")
_RANK = {outcome: rank for rank, outcome in enumerate(OUTCOMES)}

ExcInfo = tuple[type[BaseException], BaseException, Any]


class RecordingResult(unittest.TextTestResult):
    """Django's usual console output, plus each test's outcome in ``outcomes``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[str, dict[str, str]] = {}

    def _record(self, test: Any, outcome: str, err: ExcInfo | None = None) -> None:
        # A subtest's outcome (a skip in one, say) belongs to its test. Errors
        # in setUpClass and the like keep their own id, "setUpClass
        # (module.Class)": the class's tests never ran.
        test_id = getattr(test, "test_case", test).id()
        previous = self.outcomes.get(test_id)
        if previous is None or _RANK[outcome] > _RANK[previous["outcome"]]:
            message = self._exc_info_to_string(err, test) if err else ""
            self.outcomes[test_id] = {"outcome": outcome, "message": message}

    def addSuccess(self, test: Any) -> None:
        """Record and report a pass."""
        self._record(test, "ok")
        super().addSuccess(test)

    def addError(self, test: Any, err: ExcInfo) -> None:
        """Record and report an error."""
        self._record(test, "error", err)
        super().addError(test, err)

    def addFailure(self, test: Any, err: ExcInfo) -> None:
        """Record and report a failure."""
        self._record(test, "fail", err)
        super().addFailure(test, err)

    def addSubTest(self, test: Any, subtest: Any, err: ExcInfo | None) -> None:
        """Record a failed subtest against its test; passing ones say nothing."""
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(test, "fail" if failed else "error", err)
        super().addSubTest(test, subtest, err)

    def addSkip(self, test: Any, reason: str) -> None:
        """Record and report a skip."""
        self._record(test, "skip")
        super().addSkip(test, reason)

    def addExpectedFailure(self, test: Any, err: ExcInfo) -> None:
        """Record and report an expected failure."""
        self._record(test, "expected failure")
        super().addExpectedFailure(test, err)

    def addUnexpectedSuccess(self, test: Any) -> None:
        """Record and report an unexpected success."""
        self._record(test, "unexpected success")
        super().addUnexpectedSuccess(test)


class RecordingRunner(DiscoverRunner):
    """Django's runner, writing each test's outcome to ``DJANGO_SUITE_RESULTS``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._results_path = Path(os.environ["DJANGO_SUITE_RESULTS"])
        self._outcomes: dict[str, dict[str, str]] = {}

    def get_resultclass(self) -> type[unittest.TextTestResult]:
        """Always :class:`RecordingResult` (no --pdb or --debug-sql here)."""
        return RecordingResult

    def _write(self, *, finished: bool) -> None:
        payload = {"finished": finished, "tests": self._outcomes}
        self._results_path.write_text(json.dumps(payload, indent=1, sort_keys=True))

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> RecordingResult:
        """Run the tests and write their outcomes before databases are torn down."""
        result = super().run_suite(suite, **kwargs)
        self._outcomes = result.outcomes
        self._write(finished=False)
        return result

    def run_tests(self, test_labels: list[str], **kwargs: Any) -> int:
        """Run everything; mark the results finished once teardown succeeded."""
        failures = super().run_tests(test_labels, **kwargs)
        self._write(finished=True)
        return failures
