"""ShopLake's pipeline package.

One process-wide setting has to be made before any module loads delta-rs:
delta-rs (the ``deltalake`` wheel) allocates with its own jemalloc, which reads
``_RJEM_MALLOC_CONF`` once, at its first allocation. By default jemalloc keeps
freed pages for ten seconds; an incremental run's MERGEs of order lines and
``fact_sales`` free a few hundred megabytes each while the JVM beside them
holds its heap, so a background thread returns them after 0.3 s instead
(docs/decisions.md, "After a run on a large lake"). A value already in the environment wins.
"""

from __future__ import annotations

import os

DELTA_RS_ALLOCATOR = "background_thread:true,dirty_decay_ms:300,muzzy_decay_ms:0"
os.environ.setdefault("_RJEM_MALLOC_CONF", DELTA_RS_ALLOCATOR)
