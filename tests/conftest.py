import urllib.error

import numpy as np
import pytest
import torch

# Tests run on 2 CPU cores next to each other: one torch thread each is fastest.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Skip the tests marked ``cuda`` on a machine where torch sees no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA device: torch.cuda.is_available() is False here"
    )
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def make_images(n_samples=60, size=8, channels=3, seed=0, labels=("cat", "dog")):
    """Tiny uint8 images whose class is which half of the image is brighter."""
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 120, size=(n_samples, size, size, channels)).astype(np.uint8)
    y_index = np.arange(n_samples) % len(labels)
    half = max(size // 2, 1)
    for i, k in enumerate(y_index):
        if k == 1:
            X[i, :, :half] += 120
        elif k == 2:
            X[i, :half] += 120
        else:
            X[i, :, half:] += 120
    return X, np.asarray(labels)[y_index]


@pytest.fixture
def images():
    return make_images()


# Small and quick, but enough to learn the tiny images above.
FAST = dict(
    filters=(8,), dense_units=16, epochs=2, batch_size=16, lr=0.01, random_state=0
)


@pytest.fixture
def torch_cache(tmp_path, monkeypatch):
    """An empty torch cache, and no network: a download attempt fails at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


class StandInAccelerator:
    """An accelerator that says it is process ``process_index`` of several.

    It shards DataLoaders as Accelerate does, so that one process can check
    what each of several would read.
    """

    device = torch.device("cpu")

    def __init__(self, process_index, num_processes):
        self.process_index = process_index
        self.num_processes = num_processes

    def prepare(self, loader):
        from accelerate.data_loader import prepare_data_loader

        return prepare_data_loader(
            loader,
            num_processes=self.num_processes,
            process_index=self.process_index,
            put_on_device=False,
        )
