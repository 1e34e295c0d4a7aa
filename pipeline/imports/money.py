"""A line's unit_price and discount_pct from what an export states, exact to the cent.

Silver computes line_net = round(quantity * unit_price * (1 - discount_pct / 100), 2)
half up, keeping 4 decimal places of unit_price and discount_pct (docs/contract.md
§3 and §5). An export may state a line total (before or after the
discount) instead of a unit price, and a discount as a fraction or an amount
of money. The importer writes the 4-decimal unit price and discount for which
Silver's formula gives back the export's own amounts: the net total when the
export states it (line_net, or a unit price or gross total with a discount
amount), else the gross total. When no 4-decimal value can do that (a large
quantity at a high discount) the nearest is written and the line is counted
as inexact in the report.
"""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation, localcontext

CENT = Decimal("0.01")
STEP = Decimal("0.0001")
HUNDRED = Decimal(100)
HALF_CENT = Decimal("0.005")
_PLAIN = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$")
_CURRENCY = "$€£¥ \u00a0"
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_THOUSANDS_EU = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d+)?$")


class LineError(ValueError):
    """The line's amounts cannot be turned into a unit price (the reason is the message)."""


def clean_number(text: str, decimal_separator: str = ".") -> str:
    """A number as plain text: currency signs, thousands separators and a decimal comma removed.

    Text that is not a number stays as it was, for Silver's rules to judge.
    """
    if _PLAIN.match(text):
        return text
    value = text.strip(_CURRENCY)
    negative = value.startswith("(") and value.endswith(")")  # accounting style (12.50)
    if negative:
        value = "-" + value[1:-1].strip(_CURRENCY)
    if decimal_separator == ",":
        if _THOUSANDS_EU.match(value):
            value = value.replace(".", "")
        value = value.replace(",", ".", 1) if value.count(",") == 1 else value
    elif _THOUSANDS.match(value):
        value = value.replace(",", "")
    return value if _PLAIN.match(value) else text


def to_decimal(text: str, what: str) -> Decimal:
    if not _PLAIN.match(text):
        raise LineError(f"{what} {text!r} is not a number")
    try:
        return Decimal(text)
    except InvalidOperation as exc:
        raise LineError(f"{what} {text!r} is not a number") from exc


def plain(value: Decimal) -> str:
    """Decimal as plain text without exponent or trailing zeros (20.0000 -> 20)."""
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def percent_text(text: str, kind: str) -> str:
    """A percent or fraction discount as percent text ('0.2' fraction -> '20', '15%' -> '15')."""
    has_sign = text.endswith("%")
    value = text[:-1].strip() if has_sign else text
    if kind == "percent" or has_sign or value == "":
        return value
    if not _PLAIN.match(value):
        return text  # not a number: Silver's discount rule names it
    return plain(Decimal(value) * HUNDRED)


def _net(quantity: int, unit: Decimal, discount: Decimal) -> Decimal:
    """Silver's line_net, exactly (every operand is a finite decimal)."""
    with localcontext() as ctx:
        ctx.prec = 60
        value = quantity * unit * (HUNDRED - discount) / HUNDRED
        return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _solve_unit(quantity: int, target: Decimal, discount: Decimal) -> tuple[Decimal, bool]:
    """The 4-decimal unit price u with _net(q, u, d) == target (exact=False when none exists)."""
    with localcontext() as ctx:
        ctx.prec = 60
        factor = quantity * (HUNDRED - discount) / HUNDRED
        guess = (target / factor).quantize(STEP, rounding=ROUND_HALF_UP)
        if _net(quantity, guess, discount) == target:
            return guess, True
        low = ((target - HALF_CENT) / factor).quantize(STEP, rounding=ROUND_CEILING)
        for candidate in (low, low + STEP):
            if _net(quantity, candidate, discount) == target:
                return candidate, True
        return guess, False


def _solve_discount(quantity: int, unit: Decimal, target: Decimal) -> tuple[Decimal, bool]:
    """The 4-decimal discount_pct d with _net(q, u, d) == target."""
    with localcontext() as ctx:
        ctx.prec = 60
        gross = quantity * unit
        guess = ((gross - target) * HUNDRED / gross).quantize(STEP, rounding=ROUND_HALF_UP)
        if not 0 <= guess <= 100 or _net(quantity, unit, guess) == target:
            return guess, True  # outside 0..100 Silver quarantines it anyway (invalid_discount)
        upper = ((gross - target + HALF_CENT) * HUNDRED / gross).quantize(STEP)
        for candidate in (upper, upper - STEP, upper + STEP):
            if _net(quantity, unit, candidate) == target:
                return candidate, True
        return guess, False


def line_amounts(
    quantity: str, price: str, discount: str, price_kind: str, discount_kind: str
) -> tuple[str, str, bool]:
    """(unit_price, discount_pct, exact) as landing text for one line.

    A unit price with a percent or fraction discount is passed on as stated
    (Silver's rules judge it); anything else is derived and needs a whole
    quantity >= 1 and numeric amounts, else LineError says why.
    """
    if price_kind == "unit" and discount_kind != "amount":
        return price, percent_text(discount, discount_kind), True
    if not re.fullmatch(r"[+-]?\d{1,9}", quantity.strip()) or int(quantity) < 1:
        raise LineError(
            f"quantity {quantity!r} is not a whole number >= 1, so the {price_kind} price "
            "cannot be turned into a unit price"
        )
    q = int(quantity)
    stated = to_decimal(price, "price")
    if discount_kind == "amount":
        amount = to_decimal(discount, "discount amount") if discount else Decimal(0)
        if price_kind == "unit":
            unit, exact_unit, net = stated, True, q * stated - amount
        else:
            gross = stated if price_kind == "line_gross" else stated + amount
            net = stated - amount if price_kind == "line_gross" else stated
            if gross <= 0:
                raise LineError(f"line total {price!r} leaves no positive unit price")
            unit, exact_unit = _solve_unit(q, gross.quantize(CENT, ROUND_HALF_UP), Decimal(0))
        if unit <= 0:
            return plain(unit), "0", True  # Silver's unit_price rule names it
        pct, exact = _solve_discount(q, unit, net.quantize(CENT, ROUND_HALF_UP))
        return plain(unit), plain(pct), exact and exact_unit
    pct = to_decimal(percent_text(discount, discount_kind) if discount else "0", "discount")
    if not 0 <= pct <= 100:
        raise LineError(f"discount {discount!r} is outside 0..100 %")
    if stated <= 0:
        raise LineError(f"line total {price!r} leaves no positive unit price")
    if price_kind == "line_gross":
        # the gross total fixes the unit price; the net follows from it and the discount
        if pct == 100:
            unit, exact = _solve_unit(q, stated.quantize(CENT, ROUND_HALF_UP), Decimal(0))
            return plain(unit), plain(pct), exact
        target = (stated * (HUNDRED - pct) / HUNDRED).quantize(CENT, ROUND_HALF_UP)
    else:
        if pct == 100:
            raise LineError("a 100 % discount leaves no price to derive the unit price from")
        target = stated.quantize(CENT, ROUND_HALF_UP)
    unit, exact = _solve_unit(q, target, pct)
    return plain(unit), plain(pct), exact
