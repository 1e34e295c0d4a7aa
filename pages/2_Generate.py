"""Data generator: write realistic, dirty demo files into the lake's landing zone.

The generator always writes under the configured lake root (no path is taken
from the user). It runs in a background job so that leaving the page does not
stop it half-way.
"""

from __future__ import annotations

import importlib

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pipeline import app_state, read
from pipeline.config import settings

ui.page_guard()
st.title("Data generator")
st.caption(
    f"Writes orders (CSV), order items (CSV), customers (JSON Lines) and products (Parquet) "
    f"to `{settings().landing}`, in batches, with defects injected at the chosen rates."
)


def _defect_kinds() -> list[str]:
    """The defect names the generator accepts in `rates`, if it publishes them."""
    try:  # by module path: pipeline.sources re-exports the generate() function under that name
        gen = importlib.import_module("pipeline.sources.generate")
    except ImportError:
        return []
    names = getattr(gen, "DEFECT_NAMES", None)
    return [str(n) for n in names] if isinstance(names, list | tuple) else []


def _generate(job: app_state.Job, options: dict) -> list[dict]:
    from pipeline.demo import generate_demo

    return generate_demo(progress=job.report, **options)


running = app_state.current()
if read.cache_key("bronze", "orders") is not None:
    st.info(
        "This lake already has data. Generating without *Append* starts the batch lake "
        "afresh (Bronze, Silver and Gold tables built from landing files are removed; run "
        "and quality history and the live tables stay). Tick *Append* to add one batch.",
        icon=":material/info:",
    )
with st.form("generate"):
    c1, c2, c3, c4 = st.columns(4)
    orders = c1.number_input("Orders", 100, 5_000_000, 10_000, step=1_000)
    batches = c2.number_input("Batches", 1, 100, 3)
    seed = c3.number_input("Seed", 0, 2**31 - 1, 42)
    defect_rate = c4.slider("Defect rate", 0.0, 0.30, 0.02, 0.005, format="%.3f")
    kinds = _defect_kinds()
    rates: dict[str, float] = {}
    if kinds:
        with st.expander("Per-defect rates (empty: the overall rate)"):
            grid = st.columns(3)
            for i, kind in enumerate(kinds):
                value = grid[i % 3].number_input(
                    kind.replace("_", " "),
                    0.0,
                    1.0,
                    None,
                    0.005,
                    format="%.3f",
                    key=f"rate_{kind}",
                    placeholder="overall rate",
                )
                if value is not None:
                    rates[kind] = float(value)
    append = st.checkbox(
        "Append to the existing landing files",
        value=False,
        help="Unchecked: the landing zone is replaced by fresh batches.",
    )
    submitted = st.form_submit_button(
        "Generate", type="primary", disabled=running is not None, icon=":material/database:"
    )

if submitted:
    options = {
        "orders": int(orders),
        "batches": int(batches),
        "seed": int(seed),
        "defect_rate": float(defect_rate),
        "rates": rates or None,
        "append": bool(append),
    }
    job = ui.start_job(
        "generate", f"Generating {int(orders):,} orders", lambda j: _generate(j, options)
    )
    if job is not None:
        ui.follow(job)

if running is not None:
    st.info(f"{running.label} is in progress.")
    if running.kind == "generate":
        ui.follow(running)

# --- result of the latest generation -------------------------------------------------------------
job = app_state.last("generate")
if job is not None and not job.running:
    if job.error:
        st.error(f"Generation failed: {ui.plain(job.error)}")
    else:
        manifests: list[dict] = list(job.result or [])
        sources = sorted({s for m in manifests for s in (m.get("rows") or {})})
        rows = [
            {"batch": m.get("batch_id"), **{s: (m.get("rows") or {}).get(s, 0) for s in sources}}
            for m in manifests
        ]
        defects = [
            {
                "batch": m.get("batch_id"),
                "source": source,
                "defect": rule,
                "count": n,
                # valid variants Silver normalises (e.g. status spellings): not defects
                "informational": rule in (m.get("informational") or {}).get(source, ()),
            }
            for m in manifests
            for source, rules in (m.get("defects") or {}).items()
            for rule, n in (rules or {}).items()
        ]
        total_rows = sum(sum((m.get("rows") or {}).values()) for m in manifests)
        total_defects = sum(d["count"] for d in defects if not d["informational"])
        st.success(
            f"Wrote {len(manifests)} batch(es): {total_rows:,} records with "
            f"{total_defects:,} injected defects in {job.elapsed:.1f} s."
        )
        m1, m2, m3 = st.columns(3)
        m1.metric("Batches", ui.count(len(manifests)))
        m2.metric("Records", ui.count(total_rows))
        m3.metric("Defects injected", ui.count(total_defects))
        st.subheader("Records per batch and source")
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        if defects:
            st.subheader("Defects injected (from the manifests)")
            frame = pd.DataFrame(defects)
            pivot = frame.pivot_table(
                index=["source", "defect", "informational"],
                columns="batch",
                values="count",
                aggfunc="sum",
            ).fillna(0)
            st.dataframe(pivot.astype(int).reset_index(), hide_index=True, width="stretch")
        st.page_link(
            ui.PAGES["pipeline"], label="Now run the pipeline", icon=":material/play_arrow:"
        )
