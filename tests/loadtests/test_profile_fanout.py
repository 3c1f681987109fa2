"""Tests for the profile summary of loadtests/profile_fanout.py, on made-up stacks."""

from pathlib import Path

from loadtests.profile_fanout import package_of, summarise

STACKS = """\
process 1:"gunicorn";process 2:"gunicorn";handle (gunicorn/workers/ggevent.py:120);\
__call__ (django/core/handlers/wsgi.py:124);dumps (json/__init__.py:231) 3
process 1:"gunicorn";process 2:"gunicorn";_run_leg (project/core/fanout.py:124);\
http_get (project/core/outbound/client.py:168);\
request (geventhttpclient/client.py:537);\
recv (gevent/_socketcommon.py:651) 5
process 1:"gunicorn";process 2:"gunicorn" 2
"""


def test_summary_counts_inclusive_parts_and_self_time(tmp_path: Path) -> None:
    """Inclusive shares count every part on the stack; self time goes to the leaf."""
    raw = tmp_path / "stacks.txt"
    raw.write_text(STACKS)
    total, inclusive, leaf, _ = summarise(raw)
    assert total == 10
    assert inclusive["outbound HTTP client, all of it"] == 5
    assert inclusive["  geventhttpclient"] == 5
    assert inclusive["  requests"] == 0
    assert inclusive["socket send/recv (syscalls)"] == 5
    assert inclusive["inbound HTTP server (gunicorn, pywsgi)"] == 3
    assert inclusive["Django request handling"] == 3
    assert inclusive["JSON encode/decode"] == 3
    assert leaf == {"gevent": 5, "json": 3, "(native)": 2}


def test_package_names_group_project_apps_and_libraries() -> None:
    """Project files group by app, libraries by top-level package."""
    assert package_of("project/core/fanout.py") == "project/core"
    assert package_of("urllib3/connectionpool.py") == "urllib3"
    assert package_of("typing.py") == "typing"
    assert package_of("") == "(native)"
