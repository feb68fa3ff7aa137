"""The words every layer shares, defined once: the arms, the axes, a run's statuses.

The grid schema (`mupcheck.spec`), the readers of tables teams bring (`mupcheck.sources`), the analysis and the
outputs all speak of a parametrization, an axis or a status; they take these names from here, the lowest
floor, so that no reader needs the schema to know what a valid status is.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["AXES", "MUP_ARMS", "PARAMETRIZATIONS", "Parametrization", "SKIP", "STATUSES"]

# The arms: muP applied by mupcheck (mup's package), muP the user's model applies itself ("custom"), and the
# standard parametrization, the control.
Parametrization = Literal["mup", "sp", "custom"]
PARAMETRIZATIONS: tuple[Parametrization, ...] = ("mup", "sp", "custom")
# The arms that promise a width-free optimum; the checks of muP (lint, coordinate check, wider is better)
# apply to them.
MUP_ARMS: tuple[Parametrization, ...] = ("mup", "custom")
# Axes a grid can vary along; the transfer suite compares optima along each of them. A cell is one value of
# each (and a parametrization).
AXES = ("width", "tokens", "depth", "batch_size")
# A run's outcome, best first: usable, unstable (its training loss spiked, or it ended no lower than it
# started), diverged (a non-finite loss, or stopped by the divergence guard).
STATUSES = ("ok", "unstable", "diverged")
# What a tracking system's status may be translated to besides STATUSES: not a result (a run still running, or
# killed before it finished), left out of the analysis and counted in the report.
SKIP = "skip"
