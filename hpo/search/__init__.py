"""The search: ``pruning`` (per epoch and between runs), the ``objective`` (folds x repeats of
``handreid``'s ``fit``), ``baselines`` (queued first, retried when they fail) and ``study``
(samplers, pruners, the resumable trial loop that never trains one trial twice).

Imports: ``hpo.fleet``, ``hpo.records``, ``hpo.common``.
"""
