"""aecore — a browser lab for autoencoders. Run: streamlit run app.py"""

import streamlit as st

from aecore.lab.latent import start_umap_warmup

st.set_page_config(page_title="aecore", page_icon="🧩", layout="wide")
start_umap_warmup()  # compile UMAP in the background: the first latent map then takes seconds, not minutes

# (file, title, icon, section): the navigation, in reading order
PAGES = [
    ("pages/home.py", "Data & models", "🏠", "Explore"),
    ("pages/reconstructions.py", "Reconstructions", "🔁", "Explore"),
    ("pages/denoise.py", "Corrupt & denoise", "🧽", "Explore"),
    ("pages/latent_map.py", "Latent map", "🗺️", "Explore"),
    ("pages/vae_lab.py", "VAE lab", "🎛️", "Explore"),
    ("pages/filters.py", "Filters", "🧱", "Inside the models"),
    ("pages/hypernetwork.py", "Hypernetwork", "🕸️", "Inside the models"),
    ("pages/sparsity.py", "Sparsity", "🕳️", "Inside the models"),
    ("pages/train.py", "Train", "🏋️", "Train & compare"),
    ("pages/semi_supervised.py", "Semi-supervised", "🏷️", "Train & compare"),
    ("pages/compare.py", "Compare", "⚖️", "Train & compare"),
]

sections: dict[str, list] = {}
for file, title, icon, section in PAGES:
    sections.setdefault(section, []).append(st.Page(file, title=title, icon=icon, default=file == PAGES[0][0]))
page = st.navigation(sections)
try:
    page.run()
except Exception as err:  # never a traceback in front of a class; st.stop/st.rerun are BaseException
    from pages.common import show_error

    show_error(err)
