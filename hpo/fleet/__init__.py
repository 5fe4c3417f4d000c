"""Who runs which trial: the running trial's ``progress`` (status line, bar, its ``progress``
attribute), ``recovery`` of trials whose worker died or was interrupted, local ``workers``,
and Slurm (``scheduler``: which tasks Slurm still runs; ``slurm``: job arrays, their
signals, following them).

Imports: ``hpo.records``, ``hpo.common``.
"""
