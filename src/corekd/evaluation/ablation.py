"""TRANSITIONAL re-exports: paired differences now live in :mod:`corekd.reporting.stats`, the "Ablations" section in
:mod:`corekd.reporting.run`.

Kept only so that ``corekd.sweep`` keeps working until it imports from :mod:`corekd.reporting`; this module
imports a layer above its own and is to be deleted then.
"""

from corekd.reporting.stats import (
    PairedDifference,
    difference_table,
    format_difference,
    paired_difference,
    per_seed,
)

__all__ = ["PairedDifference", "difference_table", "format_difference", "paired_difference", "per_seed"]
