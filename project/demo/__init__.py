"""Reference endpoints used as capacity probes (slow SQL, delay, fan-out)."""
