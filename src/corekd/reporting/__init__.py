"""Every report corekd writes, built once as blocks and rendered to Markdown and HTML.

Above :mod:`corekd.evaluation` (it reads records and analyses payloads), below the engine (runs, sweeps and grids
call it). ``blocks``: the block model and its two renderers; ``stats``: paired differences, Holm, curve AUC;
``tables``: records -> frames -> mean ± std tables; ``figures``: every matplotlib figure; ``run``, ``sweep``,
``grid``: the three reports.
"""
