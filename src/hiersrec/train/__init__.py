"""Training of the neural models: the loop, optimiser and schedules, checkpoints, the run.

Import from the submodules (`hiersrec.train.loop`, `hiersrec.train.run`...): this package imports nothing
on its own; nothing outside training imports it (reading, scoring and serving a run never load the loop).
"""
