"""What every layer shares: ``lines`` (line widths from COLUMNS, numbers and uncertainties as
text, trial labels) and ``paths`` (study names and folders, writes that never leave half a
file).

Imports: ``handreid`` and the standard library only; nothing else in ``hpo``.
"""
