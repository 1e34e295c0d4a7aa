"""ShopLake dashboard entry point: `streamlit run Home.py`.

Declares the pages with st.navigation; each page is a thin script under
pages/ that reads through pipeline/read.py, calls pipeline functions and
draws with Plotly.
"""

from __future__ import annotations

import logging
import re

import streamlit as st
from streamlit.errors import FragmentHandledException

from pipeline import read
from pipeline.app_state import readable_error

st.set_page_config(page_title="ShopLake", page_icon=":material/waves:", layout="wide")

# URL paths are the names Streamlit derives from the file names (pages/5_Sales.py -> Sales):
# see pages/_ui.page_guard for why they must match.
PAGES = {
    "Overview": [
        st.Page(
            "pages/1_Overview.py",
            url_path="Overview",
            title="Home",
            icon=":material/home:",
            default=True,
        ),
    ],
    "Data": [
        st.Page(
            "pages/2_Generate.py",
            url_path="Generate",
            title="Data generator",
            icon=":material/database:",
        ),
        st.Page(
            "pages/9_Import.py",
            url_path="Import",
            title="Import your data",
            icon=":material/upload_file:",
        ),
        st.Page(
            "pages/3_Pipeline.py",
            url_path="Pipeline",
            title="Pipeline",
            icon=":material/play_arrow:",
        ),
        st.Page(
            "pages/4_Quality.py",
            url_path="Quality",
            title="Data quality",
            icon=":material/verified:",
        ),
    ],
    "Business": [
        st.Page("pages/5_Sales.py", url_path="Sales", title="Sales", icon=":material/payments:"),
        st.Page(
            "pages/6_Customers.py",
            url_path="Customers",
            title="Customers (RFM)",
            icon=":material/group:",
        ),
        st.Page(
            "pages/7_Anomalies.py",
            url_path="Anomalies",
            title="Anomalies",
            icon=":material/warning:",
        ),
        st.Page("pages/8_Live.py", url_path="Live", title="Live", icon=":material/sensors:"),
    ],
}

page = st.navigation(PAGES)
read.prefetch_sales()  # the Sales page's tables, read in the background once per run
st.sidebar.caption("ShopLake · e-commerce lakehouse")
try:
    page.run()
except FragmentHandledException:  # Streamlit already showed it inside the fragment
    raise
except Exception as exc:  # last resort: one readable line for the user, the traceback to the log
    logging.getLogger("shoplake.app").exception("page %s failed", page.title)
    message = re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", readable_error(exc))
    st.error(f"This page could not be drawn: {message}")
