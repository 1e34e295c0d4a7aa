"""How numbers, dates and names are written for a person: one place for every page.

No Streamlit here (pipeline/ never imports it): pages/_ui.py wraps these for
widgets. Decisions, as a BI tool would make them:

- Money: the currency of ``SHOPLAKE_CURRENCY`` (an ISO 4217 code, default USD)
  with thousands separators and cents: ``$60,631.18``; a code without a
  well-known symbol is written before the number (``CHF 60,631.18``).
- Counts: whole numbers with thousands separators (``1,234``).
- Missing values: an em dash, never "None" or "nan".
- Dates that are dates: ``2025-06-30`` (no ``00:00:00``).
- Names from the data model (``rows_in``, ``cant_lose``) are shown as words
  (``Rows in``, ``Can't lose``).
- CSV downloads keep the data exact: money as the decimal text of its cents
  (``3042.99``, never ``3042.9900000000002``) and counts as integers (``2``,
  never ``2.0``); other fractions (shares, margins as a ratio, averages) with
  six decimals, dates as ``2025-06-30``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal

import numpy as np
import pandas as pd

from pipeline.config import settings

DASH = "—"
RATIO_DIGITS = 6
SYMBOLS = {
    "USD": "$",
    "EUR": "€",
    "GBP": "£",
    "JPY": "¥",
    "CNY": "¥",
    "INR": "₹",
    "KRW": "₩",
    "AUD": "A$",
    "CAD": "C$",
    "NZD": "NZ$",
    "BRL": "R$",
    "MXN": "MX$",
}
ZERO_DECIMAL = {"JPY", "KRW"}  # shown without cents; CSV exports keep the stored cents

SEGMENT_LABELS = {
    "champions": "Champions",
    "loyal": "Loyal",
    "potential_loyalists": "Potential loyalists",
    "new_customers": "New customers",
    "promising": "Promising",
    "need_attention": "Need attention",
    "about_to_sleep": "About to sleep",
    "cant_lose": "Can't lose",
    "at_risk": "At risk",
    "hibernating": "Hibernating",
}

# column name -> label; anything else: underscores to spaces, first letter upper
COLUMN_LABELS = {
    "rows_in": "Rows in",
    "rows_out": "Rows out",
    "rows_quarantined": "Quarantined",
    "run_id": "Run",
    "rfm_segment": "Segment",
    "r_score": "R score",
    "f_score": "F score",
    "m_score": "M score",
    "recency_days": "Recency (days)",
    "avg_recency_days": "Avg recency (days)",
    "monetary": "Revenue",
    "frequency": "Orders",
    "customer_id": "Customer",
    "product_id": "Product id",
    "product_name": "Product",
    "net_revenue": "Net revenue",
    "gross_revenue": "Gross revenue",
    "gross_margin": "Gross margin",
    "margin_pct": "Margin",
    "revenue_share": "Share of revenue",
    "avg_order_value": "Avg order value",
    "order_date": "Date",
    "last_order_date": "Last order",
    "as_of_date": "As of",
    "started_at": "Started",
    "finished_at": "Finished",
    "seconds": "Seconds",
    "z_score": "Z-score",
    "window_start": "Window start",
    "cancelled_orders": "Cancelled",
    "returned_orders": "Returned",
    "new_customers": "New customers",
    "unaccounted": "Unaccounted",
}


def currency() -> str:
    """The ISO code of the currency money is shown in (SHOPLAKE_CURRENCY)."""
    return settings().currency


def currency_symbol(code: str | None = None) -> str:
    code = (code or currency()).upper()
    return SYMBOLS.get(code, f"{code} ")


def is_missing(value: object) -> bool:
    if value is None or value is pd.NaT:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def money(value: object, code: str | None = None) -> str:
    """``$1,234.56`` (``-$12.00`` for a negative amount); an em dash when missing."""
    if is_missing(value):
        return DASH
    code = (code or currency()).upper()
    digits = 0 if code in ZERO_DECIMAL else 2
    number = Decimal(str(value))
    text = f"{abs(number):,.{digits}f}"
    return f"{'-' if number < 0 else ''}{currency_symbol(code)}{text}"


def money_format(code: str | None = None) -> str:
    """A printf format for a money table column (Streamlit NumberColumn, sprintf-js)."""
    code = (code or currency()).upper()
    digits = 0 if code in ZERO_DECIMAL else 2
    return f"{currency_symbol(code).replace('%', '%%')}%,.{digits}f"


def count(value: object) -> str:
    return DASH if is_missing(value) else f"{int(value):,}"


def number(value: object, digits: int = 2) -> str:
    """A measurement (not money, not a count): ``1,234.57``."""
    return DASH if is_missing(value) else f"{float(value):,.{digits}f}"


def pct(value: object, digits: int = 1) -> str:
    return DASH if is_missing(value) else f"{float(value) * 100:.{digits}f}%"


def date(value: object) -> str:
    """A calendar date as ``2025-06-30``."""
    if is_missing(value):
        return DASH
    return pd.Timestamp(value).strftime("%Y-%m-%d")


def duration(seconds: object) -> str:
    """``45 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if is_missing(seconds):
        return DASH
    total = max(int(round(float(seconds))), 0)
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def segment(name: object) -> str:
    if is_missing(name):
        return DASH
    text = str(name)
    return SEGMENT_LABELS.get(text, text.replace("_", " ").capitalize())


def label(column: str) -> str:
    """A column name as a person reads it: ``rows_in`` -> ``Rows in``."""
    if column in COLUMN_LABELS:
        return COLUMN_LABELS[column]
    text = str(column).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def labels(columns: Iterable[str]) -> dict[str, str]:
    return {c: label(c) for c in columns}


# ----------------------------------------------------------------------------- CSV


def _exact_money(value: object) -> str:
    """The decimal text of a money value: floats read from DECIMAL(18,2) are rounded to cents."""
    if is_missing(value):
        return ""
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        return ""
    cents = Decimal(int(round(number * 100)))
    return f"{cents / 100:.2f}"


def _integral(series: pd.Series) -> bool:
    values = pd.to_numeric(series, errors="coerce").dropna()
    return bool(len(values)) and bool(np.all(np.equal(np.mod(values, 1), 0)))


def export_frame(
    frame: pd.DataFrame,
    money_columns: Iterable[str] = (),
    count_columns: Iterable[str] = (),
) -> pd.DataFrame:
    """A copy fit for CSV: money as exact decimal text, counts as integers, dates as dates.

    Money columns are the ones named, plus any Decimal column; count columns
    the ones named, plus float columns holding whole numbers only when named.
    """
    out = frame.copy()
    for col in money_columns:
        if col in out.columns:
            out[col] = out[col].map(_exact_money)
    for col in out.columns:
        if col in money_columns:
            continue
        series = out[col]
        if series.dtype == object and series.map(lambda v: isinstance(v, Decimal)).any():
            out[col] = series.map(_exact_money)
        elif col in count_columns:
            out[col] = pd.to_numeric(series, errors="coerce").round().astype("Int64")
        elif pd.api.types.is_datetime64_any_dtype(series):
            values = pd.to_datetime(series)
            naive = values.dt.tz_convert(None) if values.dt.tz is not None else values
            if (naive.dropna() == naive.dropna().dt.normalize()).all():
                out[col] = values.dt.strftime("%Y-%m-%d")
        elif pd.api.types.is_float_dtype(series):  # shares, ratios, averages
            out[col] = series.map(lambda v: "" if is_missing(v) else f"{v:.{RATIO_DIGITS}f}")
    return out


def csv_bytes(
    frame: pd.DataFrame, money_columns: Iterable[str] = (), count_columns: Iterable[str] = ()
) -> bytes:
    """CSV (UTF-8) of ``export_frame``: what a spreadsheet or a script reads back exactly."""
    return export_frame(frame, money_columns, count_columns).to_csv(index=False).encode("utf-8")


# ----------------------------------------------------------------------------- tables


def display_frame(
    frame: pd.DataFrame,
    dates: Iterable[str] = (),
    segments: Iterable[str] = (),
    text_nulls: bool = True,
    formats: Mapping[str, object] | None = None,
) -> pd.DataFrame:
    """A copy for st.dataframe: dates as dates, segment names as words, no "None" cells.

    Numeric columns with missing values become text (``1,234`` / an em dash):
    the grid would print "None". ``formats`` maps a column to a function
    value -> text for those columns (default: ``count`` for integers,
    ``number`` otherwise).
    """
    out = frame.copy()
    formats = dict(formats or {})
    for col in dates:
        if col in out.columns:
            out[col] = out[col].map(date)
    for col in segments:
        if col in out.columns:
            out[col] = out[col].map(segment)
    if not text_nulls:
        return out
    for col in out.columns:
        series = out[col]
        if not series.isna().any():
            continue
        if pd.api.types.is_bool_dtype(series):
            out[col] = series.map(lambda v: DASH if is_missing(v) else ("yes" if v else "no"))
        elif pd.api.types.is_numeric_dtype(series) or col in formats:
            default = count if pd.api.types.is_integer_dtype(series) else number
            fmt = formats.get(col, default)
            out[col] = series.map(lambda v, f=fmt: DASH if is_missing(v) else f(v))
        elif series.dtype == object:
            out[col] = series.map(lambda v: DASH if is_missing(v) else v)
        elif pd.api.types.is_datetime64_any_dtype(series):
            out[col] = series.map(
                lambda v: DASH if is_missing(v) else pd.Timestamp(v).strftime("%Y-%m-%d %H:%M:%S")
            )
    return out


def utc_time(value: object) -> str:
    """A moment as ``2025-06-30 14:05 UTC``."""
    if is_missing(value):
        return DASH
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC")
    return ts.strftime("%Y-%m-%d %H:%M UTC")
