"""The Live page's views of gold.live_sales_minute and gold.live_alerts.

The page reads both tables through the reader every page uses (pipeline.read,
cached per Delta version by pages/_ui.py); these pure functions only order
them and give their windows as naive UTC, which the charts and
pipeline.read.live_kpis expect. The KPIs themselves are read.live_kpis.
"""

from __future__ import annotations

import pandas as pd

_WINDOW_COLUMNS = ("window_start", "window_end")


def _naive_utc(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for column in _WINDOW_COLUMNS:
        if column in out and len(out):
            out[column] = pd.to_datetime(out[column], utc=True).dt.tz_convert(None)
    return out


def minutes_view(minutes: pd.DataFrame) -> pd.DataFrame:
    """The per-minute totals, oldest first."""
    return _naive_utc(minutes).sort_values("window_start").reset_index(drop=True)


def alerts_view(alerts: pd.DataFrame) -> pd.DataFrame:
    """The alerts, newest minute first."""
    ordered = _naive_utc(alerts).sort_values("window_start", ascending=False)
    return ordered.reset_index(drop=True)
