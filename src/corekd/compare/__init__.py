"""``corekd compare``: a grid of corpus x method-variant x seed cells, and its report (``corekd.reporting.grid``)."""
