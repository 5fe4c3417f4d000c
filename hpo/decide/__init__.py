"""What the numbers mean, each decision with a measured error rate: ``confirm`` (racing the top
trials and the baselines on fresh seeds), ``verdict`` (its statistics), ``compare`` (best vs
baseline before confirm) and ``floors`` (what no training reaches).

Imports: ``hpo.search``, ``hpo.fleet``, ``hpo.records``, ``hpo.common``.
"""
