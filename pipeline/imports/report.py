"""What an import did, in numbers: the report printed, shown in the app and stored as JSON."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field


@dataclass
class ImportReport:
    file: str
    mapping: str
    batch: str = ""
    encoding: str | None = None
    delimiter: str | None = None
    sheet: str | None = None
    rows_read: int = 0  # records of the export (header and blank lines excluded)
    lines_imported: int = 0  # order_items rows written
    orders: int = 0
    customers: int = 0
    products: int = 0
    # source -> {"keys": keys whose lines disagree, <field>: keys disagreeing on it}
    conflicts: dict[str, dict[str, int]] = field(default_factory=dict)
    unmapped_columns: list[str] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)  # mapped, not in the export
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    rejects_file: str | None = None
    dates_not_matching_format: dict[str, int] = field(default_factory=dict)
    inexact_amounts: int = 0  # lines whose total no 4-decimal unit price reproduces
    blank_lines: int = 0
    files: dict[str, str] = field(default_factory=dict)  # source -> landing file
    report_file: str | None = None
    seconds: float = 0.0

    def count_rejects(self, reasons: Counter) -> None:
        for reason, n in reasons.items():
            self.rejected_by_reason[reason] = self.rejected_by_reason.get(reason, 0) + n
        self.rejected = sum(self.rejected_by_reason.values())

    def conflict_count(self, source: str) -> int:
        return int(self.conflicts.get(source, {}).get("keys", 0))

    def summary(self) -> str:
        """One line: what was read, what was derived, what needs a look."""
        parts = [
            f"imported {self.file} as {self.batch} in {self.seconds:.1f}s: "
            f"{self.rows_read:,} rows read, {self.lines_imported:,} lines, "
            f"{self.orders:,} orders, {self.customers:,} customers, {self.products:,} products",
            f"{self.conflict_count('orders'):,} orders and "
            f"{self.conflict_count('products'):,} products with conflicting lines",
            f"{self.rejected:,} lines rejected"
            + (f" (see {self.rejects_file})" if self.rejected else ""),
        ]
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return asdict(self)
