"""Load-test tooling: the stub upstream server and Locust scenarios."""
