"""Datasets as one uint8 tensor each: ``load_dataset(name, split)`` -> ImageData.

Names: mnist, fashion-mnist, cifar10, cifar10-patches, digits, stl10, celeba, lfw, and
``folder:PATH`` for your own ImageFolder tree. Files are looked up in ``<data-dir>/<dataset>/``
(data_dir argument > $AECORE_DATA_DIR > aecore.paths.data_dir()); when absent they are downloaded
through torchvision unless offline (AECORE_OFFLINE=1 or download=False); MNIST and Fashion-MNIST
fall back to their bundled 10,000-image test splits. Missing files give a DataError that says which
files to put where. See ``dataset_info(name)`` for each dataset's source, licence and options.
"""

# one module per dataset family; importing it registers its datasets (registry.py imports none of them)
from . import celeba, cifar, digits, folder, lfw, mnist, stl10  # noqa: F401
from .base import ImageData, split_off
from .registry import DatasetSpec, dataset_info, list_datasets, load_dataset, register_dataset

__all__ = ["ImageData", "split_off", "load_dataset", "list_datasets", "dataset_info", "register_dataset",
           "DatasetSpec"]
