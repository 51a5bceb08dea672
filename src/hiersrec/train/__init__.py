"""Training of the neural models: the loop, optimiser and schedules, the full-softmax loss, run artifacts.

Import from the submodules (`hiersrec.train.loop`, `hiersrec.train.artifact`...): this package imports
nothing on its own, so that models can use `hiersrec.train.softmax` without loading the loop.
"""
