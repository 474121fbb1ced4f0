"""First page: the bundled data and the model zoo at a glance."""

import streamlit as st

from aecore.data import dataset_info, load_dataset
from aecore.errors import AecoreError
from aecore.models import get_model_class, list_models
from aecore.store import list_pretrained
from aecore.viz import image_grid
from pages.common import DATASETS as OFFLINE_DATASETS  # importing it also routes a bare deep link through app.py
from pages.common import bind, plain, projector_on, projector_switch, sync_url, tile_scale


@st.cache_data(max_entries=4, show_spinner="Loading data…")
def sample_images(name: str, count: int, seed: int, scale: int):
    data = load_dataset(name, "test")
    import torch

    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count]
    grid = image_grid(data.images[order], nrow=8 if scale > 2 else 16, scale=scale)
    return grid, data.classes, data.source, len(data)


st.title("aecore — autoencoder lab")
st.write("Train, inspect and compare autoencoders on real image data. "
         "Pick a dataset to see what the models learn from.")

with st.sidebar:
    projector_switch()
bind("dataset", OFFLINE_DATASETS[0], choices=OFFLINE_DATASETS)
bind("seed", 0, int, lo=0, hi=10_000, shared="seed")
left, right = st.columns([2, 1])
with left:
    name = st.selectbox("Dataset", OFFLINE_DATASETS, key="dataset")
    seed = st.number_input("Seed", min_value=0, max_value=10_000, step=1, key="seed")
    sync_url("dataset", "seed")
    try:
        grid, classes, source, size = sample_images(name, 32 if projector_on() else 64, int(seed),
                                                    tile_scale(28, screen_px=42))
    except AecoreError as err:
        st.error(plain(str(err)))
    else:
        st.image(grid, caption=f"{name}: {'32' if projector_on() else '64'} random test images of {size:,} — source: {source}")
        st.caption(plain("Classes: " + ", ".join(classes)))
        st.caption(plain(dataset_info(name).get("description", "")))
with right:
    st.subheader("Models")
    st.table({"model": list_models(), "what it is": [get_model_class(n).description for n in list_models()]})
    pretrained = list_pretrained()
    st.subheader("Pretrained")
    st.write(plain(", ".join(pretrained)) if pretrained else "No pretrained models are installed yet.")
