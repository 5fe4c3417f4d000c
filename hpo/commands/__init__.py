"""The ``hpo`` verbs, one module each: ``add_parser(sub)`` declares the verb's options and
``run(args)`` hands the parsed request to ``hpo`` functions; ``hpo.cli`` assembles them.

Imports: every layer below (``hpo.views`` down to ``hpo.common``); nothing imports it but
``hpo.cli``.
"""
