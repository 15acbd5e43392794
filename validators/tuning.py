"""What calibration may tune in a validator: its one threshold-like param and the values worth
trying (`foldem bench calibrate` fits it to a false-rejection budget on labelled traces)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Tunable:
    """The one numeric param of a validator that trades recall for false rejections, and the
    values worth trying, the most sensitive (most firings) first. Calibration on labelled
    traces (`foldem bench calibrate`) picks the most sensitive value within a budget; a short
    declared ladder, not a search, so a small sample cannot fit noise between close values."""

    param: str
    values: tuple[int | float, ...]
