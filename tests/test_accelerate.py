"""Training through Hugging Face Accelerate (skorch's AccelerateMixin), on the CPU.

Accelerate's CPU path runs the same code as a multi-GPU run with one process.
Data-parallel training proper is checked with two CPU processes launched by
``torchrun`` (PyTorch's gloo backend stands in for NCCL), and the sharding of
batches with a stand-in accelerator that reports several processes.
"""

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, StandInAccelerator, make_images
from numpy.testing import assert_allclose, assert_array_equal

from sklearn_cnn import CNNImageClassifier

accelerate = pytest.importorskip("accelerate")


from sklearn_cnn._accelerate import AcceleratedImageNet  # noqa: E402
from sklearn_cnn._network import ConvNet  # noqa: E402
from sklearn_cnn._sources import (  # noqa: E402
    ArrayImages,
    ImageLayout,
    LabelledImages,
)


@pytest.fixture(scope="module")
def accelerator():
    return accelerate.Accelerator(cpu=True)


def test_trains_like_the_plain_classifier(accelerator):
    X, y = make_images(n_samples=48)
    plain = CNNImageClassifier(**FAST, device="cpu").fit(X, y)
    accelerated = CNNImageClassifier(**FAST, accelerator=accelerator)
    accelerated.fit(X, y)

    assert isinstance(accelerated.net_, AcceleratedImageNet)
    assert accelerated.device_ == "cpu"
    # One process, no mixed precision: the very same training, step by step.
    assert_allclose(accelerated.loss_curve_, plain.loss_curve_, rtol=1e-5)
    assert_allclose(accelerated.predict_proba(X), plain.predict_proba(X), atol=1e-5)
    assert_array_equal(accelerated.classes_, ["cat", "dog"])
    assert accelerated.score(X, y) > 0.5


def test_verbose_zero_prints_nothing(accelerator, capsys):
    X, y = make_images(n_samples=32)
    CNNImageClassifier(**FAST, accelerator=accelerator).fit(X, y)
    assert capsys.readouterr().out == ""
    CNNImageClassifier(**FAST, accelerator=accelerator, verbose=1).fit(X, y)
    assert "train_loss" in capsys.readouterr().out


def test_early_stopping_and_warm_start(accelerator):
    X, y = make_images(n_samples=60)
    clf = CNNImageClassifier(
        **{**FAST, "epochs": 4},
        accelerator=accelerator,
        early_stopping=True,
        n_iter_no_change=1,
        validation_fraction=0.25,
        warm_start=True,
    ).fit(X, y)
    assert clf.validation_scores_ is not None
    first = clf.n_iter_
    # The modules were unwrapped after training and are wrapped again here.
    clf.set_params(epochs=1).fit(X, y)
    assert clf.n_iter_ == first + 1
    assert not clf.net_._wrapped_with_accelerator


def test_pickles_and_predicts_the_same(accelerator):
    X, y = make_images(n_samples=32)
    clf = CNNImageClassifier(**FAST, accelerator=accelerator).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    assert_array_equal(restored.predict(X), clf.predict(X))


def test_old_name_is_the_classifier_with_a_warning():
    import sklearn_cnn

    with pytest.warns(FutureWarning, match=r"CNNImageClassifier\(accelerator=...\)"):
        assert sklearn_cnn.AcceleratedCNNImageClassifier is CNNImageClassifier
    assert "AcceleratedCNNImageClassifier" not in sklearn_cnn.__all__
    assert "accelerator" in CNNImageClassifier().get_params()


def test_device_must_agree_with_the_accelerator(accelerator):
    X, y = make_images(n_samples=16)
    clf = CNNImageClassifier(**FAST, accelerator=accelerator, device="cuda:3")
    with pytest.raises(ValueError, match="leave device='auto'"):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_gradient_accumulation_goes_through_accelerate():
    # The mixin's own step (accelerator.backward inside accumulate) is used.
    X, y = make_images(n_samples=48)
    accumulating = accelerate.Accelerator(cpu=True, gradient_accumulation_steps=2)
    clf = CNNImageClassifier(**FAST, accelerator=accumulating).fit(X, y)
    plain = CNNImageClassifier(**FAST, device="cpu").fit(X, y)
    assert np.isfinite(clf.loss_curve_).all()
    assert not np.allclose(clf.predict_proba(X), plain.predict_proba(X))


@pytest.mark.parametrize("n_samples", [10, 11, 33])
def test_sharded_batches_cover_every_image_once_per_epoch(n_samples):
    n_processes, batch_size = 3, 4
    images = np.arange(n_samples).reshape(n_samples, 1, 1, 1)
    data = LabelledImages(
        ArrayImages(images, ImageLayout("nchw", (1, 1, 1))), device="cpu"
    )
    shards, lengths = [], []
    for rank in range(n_processes):
        net = AcceleratedImageNet(
            ConvNet,
            accelerator=StandInAccelerator(rank, n_processes),
            batch_size=batch_size,
            shuffle_generator=torch.Generator().manual_seed(0),
            device="cpu",
        )
        iterator = net.get_iterator(data, training=True)
        batches = [images.flatten() for images, _ in iterator]
        assert len(batches) == len(iterator)
        lengths.append(len(batches))
        shards.append(torch.cat(batches))
    # Same number of batches and images everywhere, or the processes deadlock.
    assert len(set(lengths)) == 1
    assert len({len(shard) for shard in shards}) == 1
    seen = torch.cat(shards).numpy()
    assert set(seen) == set(range(n_samples))
    # Padding repeats at most one image per process.
    # Accelerate pads the last round of batches from the start of the epoch.
    assert len(seen) - n_samples < n_processes * batch_size
    assert np.bincount(seen).max() <= 2


_TWO_PROCESS_SCRIPT = """
import json, sys
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

sys.path.insert(0, {tests!r})
from conftest import FAST, make_images
from sklearn_cnn import CNNImageClassifier

from skorch.callbacks import Callback


class CountTrainingImages(Callback):
    def initialize(self):
        self.seen_ = 0
        return self

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            self.seen_ += len(batch[1])


torch.set_num_threads(1)
accelerator = Accelerator(cpu=True)
counter = CountTrainingImages()
X, y = make_images(n_samples=61)
clf = CNNImageClassifier(
    **{{**FAST, "epochs": 3}},
    accelerator=accelerator,
    early_stopping=True,
    validation_fraction=0.2,
    callbacks=[("count", counter)],
)
clf.fit(X, y)
weights = torch.cat([p.detach().flatten() for p in clf.net_.module_.parameters()])
result = dict(
    rank=accelerator.process_index,
    n_processes=accelerator.num_processes,
    module=type(clf.net_.module_).__name__,
    loss_curve=clf.loss_curve_,
    weights=weights.tolist(),
    proba=clf.predict_proba(X[:5]).tolist(),
    seen=dict(clf.net_.callbacks_)["count"].seen_,
    n_epochs=clf.n_iter_,
)
results = gather_object([result])
if accelerator.is_main_process:
    print("RESULTS" + json.dumps(results), flush=True)
# Leave the process group together: a process torn down with the group still
# open can abort in gloo's threads ("terminate called without an active
# exception") after its work is done.
accelerator.wait_for_everyone()
accelerator.end_training()
"""


@pytest.mark.slow
def test_two_processes_train_one_model(tmp_path):
    if not torch.distributed.is_available():
        pytest.skip("this torch build has no torch.distributed")
    script = tmp_path / "train.py"
    tests_folder = str(Path(__file__).parent)
    script.write_text(textwrap.dedent(_TWO_PROCESS_SCRIPT.format(tests=tests_folder)))
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        + ["--nproc-per-node", "2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(
        line for line in completed.stdout.splitlines() if line.startswith("RESULTS")
    )
    first, second = sorted(json.loads(line[len("RESULTS") :]), key=lambda r: r["rank"])
    assert first["n_processes"] == second["n_processes"] == 2
    # Accelerate deals the 3 batches of 16 of each epoch's 48 training images
    # round robin, padded to 2 per process so that both take as many steps.
    assert first["n_epochs"] == 3
    assert first["seen"] == second["seen"] == 2 * 16 * 3
    # Gradients were averaged: both processes hold the very same network...
    assert first["weights"] == second["weights"]
    assert_allclose(first["proba"], second["proba"])
    # ... share the main process's history, and unwrapped DDP after training.
    assert first["loss_curve"] == second["loss_curve"]
    assert first["module"] == second["module"] == "ConvNet"
