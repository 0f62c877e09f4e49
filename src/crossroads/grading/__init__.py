"""Grading: turn a model's response into a quality in [0, 1] (scorers, judges, verifiers).

The online learners learn from these grades, and labelling and cascades read them;
:mod:`crossroads.grading.scorers` holds the interface and the registry.
"""
