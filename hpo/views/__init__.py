"""What a user sees. ``model`` loads one read model of a study (``StudyView``: its space,
identities, trials, confirm summary, floors) once; every view takes it and never reaches back
into storage: ``headline`` and ``listing`` (``hpo show|trials|ls`` text and JSON), ``figures``
and ``report`` (plotly figures, the HTML report, the study note), ``confirm_report``,
``dashboard`` (optuna-dashboard with our artifacts; ``dashboard_app`` wraps its app to serve
``dashboard_card``, the decision drawn first on a study's page, and ``page``, the shared page
helpers) and ``export`` (the best config as YAML).

Imports: ``hpo.decide``, ``hpo.search``, ``hpo.fleet``, ``hpo.records``, ``hpo.common``.
"""
