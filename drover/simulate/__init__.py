"""`drover simulate` (issue 15, being built; docs/plans/simulation.md): the whole cluster in one process on virtual
time. Built so far: the deterministic machinery every simulated component shares (clock.py: virtual time and one
event queue; rng.py: one random stream per component from the run's seed; schedule.py: fault schedules and their
one-line text form; shrink.py: reducing a failing schedule to a minimal one)."""
