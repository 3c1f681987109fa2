"""The harness the load-test commands and locustfiles share.

Without locust: ``paths`` (where things are), ``servers`` (the servers a run
measures and the database they use, started through ``devtools``, as is the
stub upstream), ``target`` (aim at a server started elsewhere: ``--target``
and its options), ``locust_run`` (drive Locust as its own process, read what
it wrote), ``checkout`` (a git revision in a temporary worktree), ``window``
(steady-state figures from stats snapshots), ``guards`` (guards.toml and its
checks), ``usl`` (the Universal Scalability Law), ``capacity_report`` and
``bench_report`` (what those commands write), and ``workloads`` (the bench
driver's W1, W2 and AGG).

With locust, imported only by locustfiles (importing locust monkey-patches the
process): ``plugin``, which wires ``options``, ``recorder``, ``step_load`` and
``scenario_user`` to Locust's events, and ``step_shape``.
"""
