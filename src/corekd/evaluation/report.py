"""TRANSITIONAL re-exports: the run report now lives in :mod:`corekd.reporting` (``run``, ``tables``).

Kept only so that the engine's call sites (``corekd.pipeline``, ``corekd.cli``, ``corekd.sweep``,
``benchmarks/backbone_study.py``) keep working until they import from :mod:`corekd.reporting`; this module
imports a layer above its own and is to be deleted then. Nothing inside ``src/corekd/reporting`` imports it.
"""

from corekd.reporting.run import (
    SELECTED_ON_TEST,
    coverage,
    render_report,
    with_test_selection_banner,
    write_report,
)
from corekd.reporting.tables import (
    FIXED_AVG,
    FIXED_ORDER,
    NOT_APPLICABLE,
    TABLE_METRICS,
    markdown_table,
    mean_std_table,
    rate_columns,
    records_frame,
    split_records,
    students_above_teacher,
)

__all__ = [
    "FIXED_AVG",
    "FIXED_ORDER",
    "NOT_APPLICABLE",
    "SELECTED_ON_TEST",
    "TABLE_METRICS",
    "coverage",
    "markdown_table",
    "mean_std_table",
    "rate_columns",
    "records_frame",
    "render_report",
    "split_records",
    "students_above_teacher",
    "with_test_selection_banner",
    "write_report",
]
