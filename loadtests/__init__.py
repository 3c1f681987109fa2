"""Load-test tooling: Locust scenarios, the commands that run them, their harness."""
