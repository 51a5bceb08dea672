"""Training of the neural models: the loop, its options, optimiser and schedules, checkpoints, the run.

Import from the submodules (`hiersrec.train.loop`, `hiersrec.train.run`...): this package imports nothing
on its own, so that reading a run's configuration (`hiersrec.train.config`) does not load the loop.
"""
