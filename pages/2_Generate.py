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
from pipeline import app_state, formats, read
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


def _current_settings(manifests: list[dict]) -> dict:
    """The settings that made the lake's demo data (its first, initial batches)."""
    initial = [m for m in manifests if m.get("mode") == "initial"] or manifests[:1]
    params = (initial[0].get("parameters") or {}) if initial else {}
    appended = [m for m in manifests if m.get("mode") == "append"]
    return {
        "orders": int(params.get("orders", 10_000)),
        "batches": int(params.get("batches", len(initial) or 3)),
        "seed": int(initial[0].get("seed", 42)) if initial else 42,
        "defect_rate": float(params.get("defect_rate", 0.02)),
        "appended": len(appended),
        "appended_orders": sum(int((m.get("parameters") or {}).get("orders", 0)) for m in appended),
    }


def _show_lake(manifests: list[dict], made: dict) -> None:
    """The landing zone as the manifests describe it, and why records outnumber orders."""
    st.subheader("The lake's demo data")
    extra = (
        f" + {made['appended']} appended batch(es) of {made['appended_orders']:,} orders"
        if made["appended"]
        else ""
    )
    st.caption(
        f"Made with {made['orders']:,} orders in {made['batches']} batch(es), seed "
        f"{made['seed']}, defect rate {made['defect_rate']:.3f}{extra} (from "
        "`landing/_manifests`). The form below starts from these settings."
    )
    records = read.manifest_records(manifests)
    total_defects = sum(
        n
        for m in manifests
        for source, rules in (m.get("defects") or {}).items()
        for rule, n in (rules or {}).items()
        if rule not in (m.get("informational") or {}).get(source, ())
    )
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Batches", ui.count(len(manifests)), border=True)
    m2.metric("Orders generated", ui.count(made["orders"] + made["appended_orders"]), border=True)
    m3.metric("Records", ui.count(records["records"].sum()), border=True)
    m4.metric("Defects injected", ui.count(total_defects), border=True)
    orders = records.set_index("source").loc["orders"]
    st.markdown(
        f"**Why {ui.count(orders['new'])} orders make {ui.count(orders['records'])} order "
        f"records:** {ui.count(orders['new_versions'])} later versions of earlier orders "
        f"(status updates; Silver keeps the latest), {ui.count(orders['exact_duplicates'])} "
        f"exact duplicates (dropped) and {ui.count(orders['defective_extra'])} defective "
        "extra records (missing keys, bad dates, unknown statuses, malformed lines: "
        "quarantined). Items, customers and products likewise:"
    )
    ui.show_table(
        records,
        count_cols=list(records.columns[1:]),
        config={
            "new": ui.count_column("New keys"),
            "new_versions": ui.count_column("Later versions"),
            "exact_duplicates": ui.count_column("Exact duplicates"),
            "defective_extra": ui.count_column("Defective extra records"),
        },
    )
    sources = sorted({s for m in manifests for s in (m.get("rows") or {})})
    rows = [
        {"batch": m.get("batch_id"), **{s: (m.get("rows") or {}).get(s, 0) for s in sources}}
        for m in manifests
    ]
    with st.expander("Records per batch and source"):
        ui.show_table(pd.DataFrame(rows), count_cols=sources)
    defects = [
        {
            "batch": m.get("batch_id"),
            "source": source,
            "defect": rule.replace("_", " "),
            "count": n,
            # valid variants Silver normalises (e.g. status spellings): not defects
            "kind": "variant (valid)"
            if rule in (m.get("informational") or {}).get(source, ())
            else "defect",
        }
        for m in manifests
        for source, rules in (m.get("defects") or {}).items()
        for rule, n in (rules or {}).items()
    ]
    if defects:
        with st.expander("Defects injected per batch (from the manifests)"):
            frame = pd.DataFrame(defects)
            pivot = frame.pivot_table(
                index=["source", "defect", "kind"], columns="batch", values="count", aggfunc="sum"
            ).fillna(0)
            table = pivot.astype(int).reset_index()
            ui.show_table(table, count_cols=[c for c in table.columns if c.startswith("batch")])


running = app_state.current()
manifests = read.landing_manifests()
made = _current_settings(manifests) if manifests else None
if read.cache_key("bronze", "orders") is not None:
    st.info(
        "This lake already has data. Generating without *Append* starts the batch lake "
        "afresh (Bronze, Silver and Gold tables built from landing files are removed; run "
        "and quality history and the live tables stay). Tick *Append* to add one batch.",
        icon=":material/info:",
    )
defaults = made or {"orders": 10_000, "batches": 3, "seed": 42, "defect_rate": 0.02}
with st.form("generate"):
    c1, c2, c3, c4 = st.columns(4)
    orders = c1.number_input(
        "Orders", 100, 5_000_000, min(max(defaults["orders"], 100), 5_000_000), step=1_000
    )
    batches = c2.number_input("Batches", 1, 100, min(max(defaults["batches"], 1), 100))
    seed = c3.number_input("Seed", 0, 2**31 - 1, defaults["seed"])
    defect_rate = c4.slider(
        "Defect rate", 0.0, 0.30, min(defaults["defect_rate"], 0.30), 0.005, format="%.3f"
    )
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

progress_area = st.container()
following = None
if submitted:
    options = {
        "orders": int(orders),
        "batches": int(batches),
        "seed": int(seed),
        "defect_rate": float(defect_rate),
        "rates": rates or None,
        "append": bool(append),
    }
    following = ui.start_job(
        "generate", f"Generating {int(orders):,} orders", lambda j: _generate(j, options)
    )
elif running is not None:
    st.info(f"{running.label} is in progress.")
    if running.kind == "generate":
        following = running

# --- result of the latest generation -------------------------------------------------------------
job = app_state.last("generate")
if following is None and job is not None and not job.running:
    if job.error:
        st.error(f"Generation failed: {ui.plain(job.error)}")
    else:
        written: list[dict] = list(job.result or [])
        total_rows = sum(sum((m.get("rows") or {}).values()) for m in written)
        st.success(
            f"Wrote {len(written)} batch(es): {total_rows:,} records in "
            f"{formats.duration(job.elapsed)}."
        )
        st.page_link(
            ui.PAGES["pipeline"], label="Now run the pipeline", icon=":material/play_arrow:"
        )

if manifests and made is not None:
    _show_lake(manifests, made)
elif following is None:
    st.caption("No generated data in this lake yet (no manifests under `landing/_manifests`).")

if following is not None:
    with progress_area:
        ui.follow(following)
