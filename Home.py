"""ShopLake dashboard entry point: `streamlit run Home.py`.

Declares the pages with st.navigation; each page is a thin script under
pages/ that reads through pipeline/read.py, calls pipeline functions and
draws with Plotly.
"""

from __future__ import annotations

import logging

import streamlit as st
from streamlit.errors import FragmentHandledException

from pipeline.app_state import readable_error

st.set_page_config(page_title="ShopLake", page_icon=":material/lake:", layout="wide")

PAGES = {
    "Overview": [
        st.Page(
            "pages/1_Home.py",
            url_path="overview",
            title="Home",
            icon=":material/home:",
            default=True,
        ),
    ],
    "Data": [
        st.Page(
            "pages/2_Generate.py",
            url_path="generate",
            title="Data generator",
            icon=":material/database:",
        ),
        st.Page(
            "pages/3_Pipeline.py",
            url_path="pipeline",
            title="Pipeline",
            icon=":material/play_arrow:",
        ),
        st.Page(
            "pages/4_Quality.py",
            url_path="quality",
            title="Data quality",
            icon=":material/verified:",
        ),
    ],
    "Business": [
        st.Page("pages/5_Sales.py", url_path="sales", title="Sales", icon=":material/payments:"),
        st.Page(
            "pages/6_Customers.py",
            url_path="customers",
            title="Customers (RFM)",
            icon=":material/group:",
        ),
        st.Page(
            "pages/7_Anomalies.py",
            url_path="anomalies",
            title="Anomalies",
            icon=":material/warning:",
        ),
        st.Page("pages/8_Live.py", url_path="live", title="Live", icon=":material/sensors:"),
    ],
}

page = st.navigation(PAGES)
st.sidebar.caption("ShopLake · e-commerce lakehouse")
try:
    page.run()
except FragmentHandledException:  # Streamlit already showed it inside the fragment
    raise
except Exception as exc:  # last resort: one readable line for the user, the traceback to the log
    logging.getLogger("shoplake.app").exception("page %s failed", page.title)
    st.error(f"This page could not be drawn: {readable_error(exc)}")
