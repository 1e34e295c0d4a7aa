"""Per-page script time with Streamlit's AppTest, on the lake SHOPLAKE_LAKE points at.

The dashboard target is "every page's script under 1 second once the
SparkSession exists": the first run of each page warms its caches (as a
visitor's first view after a pipeline run would), the reruns that follow are
what a person waits for, so the median rerun is reported per page.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = {
    "home": "pages/1_Overview.py",
    "generate": "pages/2_Generate.py",
    "pipeline": "pages/3_Pipeline.py",
    "quality": "pages/4_Quality.py",
    "sales": "pages/5_Sales.py",
    "customers": "pages/6_Customers.py",
    "anomalies": "pages/7_Anomalies.py",
    "live": "pages/8_Live.py",
}


def page_seconds(repeats: int = 3, timeout: float = 120.0) -> dict[str, float]:
    """Median rerun seconds per page (after one warm-up run)."""
    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT))
    out: dict[str, float] = {}
    for name, path in PAGES.items():
        at = AppTest.from_file(str(ROOT / "Home.py"), default_timeout=timeout)
        at.run()
        at.switch_page(path).run()  # warm-up: caches filled
        if at.exception:
            raise RuntimeError(f"page {name} raised: {at.exception[0].value}")
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            at.run()
            samples.append(time.perf_counter() - started)
        out[name] = statistics.median(samples)
    return out


def main() -> int:
    timings = page_seconds()
    print(json.dumps({"pages": timings, "page_seconds_max": max(timings.values())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
