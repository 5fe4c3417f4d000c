"""What every layer shares: ``lines`` (line widths from COLUMNS, numbers and uncertainties as
text, trial labels), ``paths`` (study names and folders, writes that never leave half a
file), ``args`` (argument checks light enough to come before Optuna and torch load), ``attrs``
(a trial's attributes wherever they are kept) and ``table`` (aligned columns that fit the width).

Imports: ``handreid`` and the standard library only; nothing else in ``hpo``.
"""
