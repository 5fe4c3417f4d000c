"""What a study stores, and how it is read back: the one module that touches Optuna's
internals (``optuna_internals``), storages (``storage``: URLs, journals and their repair),
search spaces (``space``), artifacts (``artifacts``: space, config, report), each trial's
epoch ``history`` and ``curves`` image, ``checkpoints`` (the models kept and who owns them),
the trainer config a trial trained (``configs``) and the companion study of confirm runs
(``companion``). It records; it never decides what a number means.

Imports: ``hpo.common`` (and ``handreid``, Optuna).
"""
