"""aecore — a browser lab for autoencoders. Run: streamlit run app.py"""

import streamlit as st

import pages.common  # noqa: F401  first, whole: sessions starting together then never see it half-imported

st.set_page_config(page_title="aecore", page_icon="🧩", layout="wide")

# (file, title, icon, section): the navigation, in reading order
PAGES = [
    ("pages/home.py", "Data & models", ":material/home:", "Explore"),
    ("pages/reconstructions.py", "Reconstructions", ":material/compare_arrows:", "Explore"),
    ("pages/denoise.py", "Corrupt & denoise", ":material/auto_fix_high:", "Explore"),
    ("pages/latent_map.py", "Latent map", ":material/scatter_plot:", "Explore"),
    ("pages/vae_lab.py", "VAE lab", ":material/tune:", "Explore"),
    ("pages/decode.py", "Decode anywhere", ":material/gesture:", "Explore"),
    ("pages/filters.py", "Filters", ":material/grid_view:", "Inside the models"),
    ("pages/hypernetwork.py", "Hypernetwork", ":material/hub:", "Inside the models"),
    ("pages/sparsity.py", "Sparsity", ":material/blur_on:", "Inside the models"),
    ("pages/units.py", "Units", ":material/neurology:", "Inside the models"),
    ("pages/layers.py", "Layers", ":material/account_tree:", "Inside the models"),
    ("pages/train.py", "Train", ":material/model_training:", "Train & compare"),
    ("pages/semi_supervised.py", "Semi-supervised", ":material/label:", "Train & compare"),
    ("pages/compare.py", "Compare", ":material/balance:", "Train & compare"),
]

sections: dict[str, list] = {}
for file, title, icon, section in PAGES:
    sections.setdefault(section, []).append(st.Page(file, title=title, icon=icon, default=file == PAGES[0][0]))
page = st.navigation(sections, expanded=True)   # every page listed: no 'View more' to find in front of a class
try:
    page.run()
except Exception as err:  # never a traceback in front of a class; st.stop/st.rerun are BaseException
    from pages.common import show_error

    show_error(err)
