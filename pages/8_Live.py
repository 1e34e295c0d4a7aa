"""Live: placeholder (the Live page is built by another engineer and replaces this file)."""

import streamlit as st

st.title("Live")
st.info("The live stream page is not available yet.")
