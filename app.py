"""aecore — a browser lab for autoencoders. Run: streamlit run app.py"""

import streamlit as st

st.set_page_config(page_title="aecore", page_icon="🧩", layout="wide")

pages = [
    st.Page("pages/home.py", title="Data & models", icon="🏠", default=True),
]
st.navigation(pages).run()
