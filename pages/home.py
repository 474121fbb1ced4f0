"""First page: the bundled data and the model zoo at a glance."""

import streamlit as st

from aecore.data import dataset_info, load_dataset
from aecore.errors import AecoreError
from aecore.models import get_model_class, list_models
from aecore.store import list_pretrained
from aecore.viz import image_grid
from pages.common import DATASETS as OFFLINE_DATASETS  # importing it also routes a bare deep link through app.py
from pages.common import plain


@st.cache_data(max_entries=4, show_spinner="Loading data…")
def sample_images(name: str, count: int, seed: int):
    data = load_dataset(name, "test")
    import torch

    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    return image_grid(data.images[order], nrow=16, scale=2), data.classes, data.source, len(data)


st.title("aecore — autoencoder lab")
st.write("Train, inspect and compare autoencoders on real image data. "
         "Pick a dataset to see what the models learn from.")

left, right = st.columns([2, 1])
with left:
    name = st.selectbox("Dataset", OFFLINE_DATASETS, key="dataset")
    seed = st.number_input("Seed", min_value=0, max_value=10_000, value=0, step=1, key="seed")
    try:
        grid, classes, source, size = sample_images(name, 64, int(seed))
    except AecoreError as err:
        st.error(plain(str(err)))
    else:
        st.image(grid, caption=f"{name}: 64 random test images of {size:,} — source: {source}")
        st.caption(plain("Classes: " + ", ".join(classes)))
        st.caption(plain(dataset_info(name).get("description", "")))
with right:
    st.subheader("Models")
    st.table({"model": list_models(), "what it is": [get_model_class(n).description for n in list_models()]})
    pretrained = list_pretrained()
    st.subheader("Pretrained")
    st.write(plain(", ".join(pretrained)) if pretrained else "No pretrained models are installed yet.")
