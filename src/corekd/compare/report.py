"""The grid report now lives in :mod:`corekd.reporting.grid`; these re-exports keep ``corekd.compare.grid`` and
``corekd.cli`` working until they import from there (then this module is to be deleted)."""

from corekd.reporting.grid import (
    Grid,
    build_blocks,
    draw_figures,
    is_grid_folder,
    read_grid,
    read_grid_analyses,
    write_grid_report,
)

__all__ = [
    "Grid",
    "build_blocks",
    "draw_figures",
    "is_grid_folder",
    "read_grid",
    "read_grid_analyses",
    "write_grid_report",
]
