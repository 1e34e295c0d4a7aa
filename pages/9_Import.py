"""Import: a flat line-level export (CSV or .xlsx) into one batch of the landing zone.

Thin: the upload is saved inside the lake root only (landing/_imports/uploads,
under a name made from the upload's id, never a path from the user), and
pipeline.imports does the reading, mapping and writing, in a background job
like the generator's, so leaving the page does not stop it half-way.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages import _ui as ui
from pipeline import app_state, imports

ui.page_guard()
st.title("Import your data")
st.caption(
    "One row per order line, as shops and spreadsheets export it: ShopLake splits it into "
    "orders, order items, customers and products, one landing batch. Then run the pipeline."
)


def _import(job: app_state.Job, path: object, mapping: imports.Mapping, batch: str | None):
    try:
        return imports.import_file(path, mapping, batch=batch, progress=job.report)
    finally:
        path.unlink(missing_ok=True)


def _show_report(report: imports.ImportReport) -> None:
    st.success(ui.plain(report.summary()))
    cols = st.columns(6)
    for col, (label, value) in zip(
        cols,
        [
            ("Rows read", report.rows_read),
            ("Lines", report.lines_imported),
            ("Orders", report.orders),
            ("Customers", report.customers),
            ("Products", report.products),
            ("Rejected", report.rejected),
        ],
        strict=True,
    ):
        col.metric(label, ui.count(value), border=True)
    conflicts = pd.DataFrame(
        [
            {"source": source, "field": name, "keys": n}
            for source, counts in report.conflicts.items()
            for name, n in counts.items()
            if name != "keys" and n
        ],
        columns=["source", "field", "keys"],
    )
    if not conflicts.empty:
        st.markdown("**Conflicting lines** (the later line's value was kept)")
        st.dataframe(conflicts, hide_index=True)
    if report.unmapped_columns:
        st.caption("Unmapped columns: " + ui.plain(", ".join(report.unmapped_columns)))
    if report.missing_columns:
        st.warning(
            "Mapped columns missing from the file (left blank): "
            + ui.plain(", ".join(report.missing_columns))
        )
    if report.rejected:
        reasons = ", ".join(f"{k}: {v:,}" for k, v in report.rejected_by_reason.items())
        st.warning(
            f"{report.rejected:,} lines could not be placed ({ui.plain(reasons)}); they are "
            f"kept with their line numbers in `{report.rejects_file}`."
        )
    st.caption(f"Report: `{report.report_file}`. Run the pipeline on the Pipeline page next.")


left, right = st.columns([2, 3])
with left:
    upload = st.file_uploader("Export file", type=["csv", "txt", "tsv", "xlsx", "xlsm"])
    preset = st.selectbox("Mapping preset", imports.presets(), key="import_preset")
    batch = st.text_input("Batch name (optional)", placeholder="batch-NNNNNN_import").strip()
with right:
    text = st.text_area(
        "Mapping (TOML; see README 'Bring your own data')",
        value=imports.preset_text(preset),
        height=360,
        key=f"import_mapping_{preset}",
    )

try:
    mapping = imports.parse_mapping(text, origin="the mapping above")
except imports.MappingError as exc:
    st.error(ui.plain(exc))
    st.stop()

job = app_state.last("import")
if job is not None and job.running:
    ui.follow(job)
if job is not None and job.error:
    st.error(f"The import failed: {ui.plain(job.error)}")
elif job is not None and isinstance(job.result, imports.ImportReport):
    _show_report(job.result)

if upload is None:
    st.info("Upload an export to preview how its first rows map.")
    st.stop()
imported: set = st.session_state.setdefault("imported_uploads", set())
if job is not None and job.error:  # a failed import may be tried again (saved anew below)
    imported.discard(job.meta.get("file_id"))
if upload.file_id in imported:  # not saved again: an import is not repeated by accident
    st.info(f"{ui.plain(upload.name)} was imported. Upload another export to import more.")
    st.stop()
try:
    path = imports.save_upload(upload.name, upload.file_id, upload.getbuffer())
except ValueError as exc:  # a lake at a URL
    st.error(f"Uploads need a local lake ({ui.plain(exc)}); use `python -m pipeline import`.")
    st.stop()
try:
    preview, rejects, info = imports.preview(path, mapping)
except (imports.ExportError, imports.MappingError, OSError) as exc:
    st.error(ui.plain(app_state.readable_error(exc)))
    st.stop()

st.subheader("Preview: the first rows mapped")
how = f"encoding {info.encoding}, delimiter {info.delimiter!r}" if info.encoding else "xlsx"
st.caption(
    f"{ui.plain(upload.name)} · {ui.plain(how)} · unmapped columns: "
    f"{ui.plain(', '.join(info.unmapped_columns) or 'none')}"
)
if info.missing_columns:
    st.warning("Not in the file (left blank): " + ui.plain(", ".join(info.missing_columns)))
st.dataframe(preview.to_pandas(), hide_index=True)
if rejects:
    st.dataframe(
        pd.DataFrame([{"line": r.line, "reason": r.reason} for r in rejects]), hide_index=True
    )

if st.button("Import", type="primary"):
    started = ui.start_job(
        "import",
        f"Importing {upload.name}",
        lambda j: _import(j, path, mapping, batch or None),
    )
    if started is not None:
        started.meta["file_id"] = upload.file_id
        imported.add(upload.file_id)
        ui.follow(started)
