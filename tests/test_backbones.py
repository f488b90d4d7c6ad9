"""Fine-tuning pretrained backbones with CNNImageClassifier, without any download."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from skorch.callbacks import Callback

from sklearn_cnn import CNNImageClassifier, load_model, save_model
from sklearn_cnn.augmentation import RandomHorizontalFlip
from sklearn_cnn.datasets import load_image_folder
from sklearn_cnn.inspection import layer_trace
from sklearn_cnn.preprocessing import ImageScaler, ImageStandardizer

RESNET18_FILE = "resnet18-f37072fd.pth"
# Small and quick: 32 px images, a few per class, batches of 8.
FAST = dict(epochs=1, batch_size=8, random_state=0, precision="float32")


@pytest.fixture
def resnet18_state(torch_cache):
    """A recognizable resnet18 state dict, where torchvision looks for its weights."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    torch_cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, torch_cache / RESNET18_FILE)
    return state


def make_images(n=24, size=32, channels=3, n_classes=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randint(0, 128, size=(n, size, size, channels), dtype=np.uint8)
    y = np.arange(n) % n_classes
    for k in range(n_classes):
        X[y == k, k * size // n_classes : (k + 1) * size // n_classes] += 120
    return X, np.array(["a", "b", "c", "d", "e"])[y]


def body(clf):
    return clf.net_.module_.body


def test_cached_weights_are_loaded_and_the_head_fits_the_classes(resnet18_state):
    X, y = make_images(n_classes=5, n=20)
    clf = CNNImageClassifier(backbone="resnet18", weights="DEFAULT", **FAST).fit(X, y)
    # One epoch with the body frozen: the loaded weights are still there.
    torch.testing.assert_close(
        body(clf).conv1.weight.cpu(), resnet18_state["conv1.weight"]
    )
    head = clf.net_.module_.head
    assert (head.in_features, head.out_features) == (512, 5)
    assert clf.predict_proba(X).shape == (20, 5)
    assert set(clf.predict(X)) <= set(clf.classes_)


def test_body_is_frozen_for_freeze_epochs_then_trains(resnet18_state):
    X, y = make_images()
    seen = []

    class Snapshot(Callback):
        def on_epoch_end(self, net, **kwargs):
            module = net.module_
            seen.append(
                (
                    module.body.layer1[0].conv1.weight.detach().clone(),
                    module.head.weight.detach().clone(),
                    module.body.bn1.running_mean.clone(),
                )
            )

    clf = CNNImageClassifier(
        backbone="resnet18",
        weights="DEFAULT",
        freeze_epochs=2,
        callbacks=[Snapshot()],
        **{**FAST, "epochs": 3},
    ).fit(X, y)
    initial = resnet18_state["layer1.0.conv1.weight"]
    initial_mean = resnet18_state["bn1.running_mean"]
    (body_1, head_1, mean_1), (body_2, head_2, mean_2), (body_3, _, mean_3) = seen
    assert torch.equal(body_1.cpu(), initial) and torch.equal(body_2.cpu(), initial)
    # A frozen body's batch norm keeps its running statistics too.
    assert torch.equal(mean_1.cpu(), initial_mean)
    assert torch.equal(mean_2.cpu(), initial_mean)
    assert not torch.equal(head_1, head_2)  # the head trains meanwhile
    assert not torch.equal(body_3.cpu(), initial)  # unfrozen in epoch 3
    assert not torch.equal(mean_3.cpu(), initial_mean)
    assert all(p.requires_grad for p in body(clf).parameters())


def test_freeze_epochs_zero_trains_the_body_at_once(resnet18_state):
    X, y = make_images()
    clf = CNNImageClassifier(
        backbone="resnet18", weights="DEFAULT", freeze_epochs=0, **FAST
    ).fit(X, y)
    assert not torch.equal(body(clf).conv1.weight.cpu(), resnet18_state["conv1.weight"])


def test_backbone_learning_rate(resnet18_state):
    X, y = make_images()
    clf = CNNImageClassifier(
        backbone="resnet18", weights="DEFAULT", lr=0.01, lr_schedule="constant", **FAST
    )
    groups = clf.fit(X, y).net_.optimizer_.param_groups
    body_params = {id(p) for p in body(clf).parameters()}
    (body_group,) = [g for g in groups if id(g["params"][0]) in body_params]
    assert body_group["lr"] == pytest.approx(0.005)  # lr / 2 by default
    clf.set_params(backbone_lr=0.003).fit(X, y)
    assert {g["lr"] for g in clf.net_.optimizer_.param_groups} == {0.003, 0.01}


def test_normalization_is_applied_exactly_once(resnet18_state):
    X, y = make_images(n=12)
    inside = CNNImageClassifier(backbone="resnet18", weights="DEFAULT", **FAST)
    inside.fit(X, y)
    assert inside.input_normalization_["std"] == pytest.approx((0.229, 0.224, 0.225))
    outside = make_pipeline(
        ImageScaler(),
        ImageStandardizer(preset="imagenet"),
        CNNImageClassifier(backbone="resnet18", weights="DEFAULT", **FAST),
    ).fit(X, y)
    assert outside[-1].input_normalization_ is None
    # The same arithmetic, once, in either place.
    np.testing.assert_allclose(
        outside.predict_proba(X), inside.predict_proba(X), rtol=1e-3, atol=1e-5
    )


def test_standardizer_after_an_augmenter_is_not_doubled(resnet18_state):
    X, y = make_images(n=12)
    model = make_pipeline(
        RandomHorizontalFlip(random_state=0),
        ImageScaler(),
        ImageStandardizer(preset="imagenet"),
        CNNImageClassifier(backbone="resnet18", weights="DEFAULT", **FAST),
    ).fit(X, y)
    assert model[-1].input_normalization_ is None


def test_offline_without_cache_names_the_file_and_folder(torch_cache):
    X, y = make_images(n=6)
    clf = CNNImageClassifier(backbone="resnet18", weights="IMAGENET1K_V1", **FAST)
    with pytest.raises(FileNotFoundError, match=RESNET18_FILE) as info:
        clf.fit(X, y)
    assert str(torch_cache) in str(info.value)
    assert not hasattr(clf, "net_")


def test_offline_error_comes_without_a_downloading_line(torch_cache, capfd):
    # torch's loader prints 'Downloading: "<url>"' before it tries: offline that
    # read as if the file were coming, just before the error said it was not.
    X, y = make_images(n=6)
    clf = CNNImageClassifier(backbone="resnet18", weights="IMAGENET1K_V1", **FAST)
    with pytest.raises(FileNotFoundError, match="not in the torch cache"):
        clf.fit(X, y)
    captured = capfd.readouterr()
    assert "Downloading" not in captured.out + captured.err


def test_grid_search_over_fine_tuning_parameters(resnet18_state):
    X, y = make_images(n=12, n_classes=2)
    search = GridSearchCV(
        CNNImageClassifier(backbone="resnet18", weights="DEFAULT", **FAST),
        {"freeze_epochs": [0, 1], "backbone_lr": [None, 1e-5]},
        cv=2,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["freeze_epochs"] in (0, 1)


def test_grid_search_over_backbones():
    X, y = make_images(n=12, n_classes=2)
    search = GridSearchCV(
        CNNImageClassifier(**FAST),
        {"backbone": ["resnet18", "mobilenet_v3_small"]},
        cv=2,
    ).fit(X, y)
    assert search.best_estimator_.backbone in ("resnet18", "mobilenet_v3_small")
    assert search.best_estimator_.predict(X).shape == (12,)


def test_random_weights_train_everything_at_lr():
    X, y = make_images(n=12)
    clf = CNNImageClassifier(backbone="mobilenet_v3_small", **FAST).fit(X, y)
    assert clf.input_normalization_ is None
    assert len(clf.net_.optimizer_.param_groups) == 1


def test_module_backbone_and_grayscale_images():
    X, y = make_images(n=12, size=8, channels=1)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3), torch.nn.ReLU())
    clf = CNNImageClassifier(backbone=module, **FAST).fit(X, y)
    assert clf.net_.module_.head.in_features == 6
    assert module[0].weight.grad is None  # the instance passed stays untouched


def test_state_dict_file_of_a_fine_tuned_network(tmp_path):
    """A network fine-tuned here is saved as a file and fine-tuned again."""
    X, y = make_images(n=12)
    first = CNNImageClassifier(backbone="resnet18", **FAST).fit(X, y)
    path = tmp_path / "task_a.pt"
    torch.save(first.net_.module_.state_dict(), path)
    X_b, y_b = make_images(n=10, n_classes=2, seed=1)
    second = CNNImageClassifier(backbone="resnet18", weights=path, **FAST).fit(X_b, y_b)
    torch.testing.assert_close(body(second).conv1.weight, body(first).conv1.weight)
    assert second.net_.module_.head.out_features == 2


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(weights="DEFAULT"), "needs a backbone"),
        (dict(backbone="resnet18", module=torch.nn.Linear(1, 1)), "cannot both"),
        (dict(backbone="resnet18", weights="IMAGENET1K_V7"), "IMAGENET1K_V1"),
    ],
)
def test_inconsistent_parameters_are_refused(params, match):
    X, y = make_images(n=6)
    with pytest.raises(ValueError, match=match):
        CNNImageClassifier(**params, **FAST).fit(X, y)


def test_save_load_needs_neither_cache_nor_network(resnet18_state, tmp_path):
    X, y = make_images(n=12)
    clf = CNNImageClassifier(
        backbone="resnet18", weights="DEFAULT", **{**FAST, "epochs": 2}
    ).fit(X, y)
    path = tmp_path / "model.safetensors"
    save_model(clf, path)
    (Path(tmp_path) / "torch" / "hub" / "checkpoints" / RESNET18_FILE).unlink()
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-5)
    assert loaded.input_normalization_ == clf.input_normalization_
    assert loaded.get_params()["weights"] == "DEFAULT"


def test_layer_trace_summarizes_a_deep_backbone_by_block():
    X, y = make_images(n=6)
    clf = CNNImageClassifier(backbone="resnet18", **FAST).fit(X, y)
    trace = layer_trace(clf, X[0])
    names = [row.name for row in trace.rows]
    assert "body.layer1" in names and "body.layer4" in names
    assert len(names) < 20  # blocks, not the 60 layers inside them
    assert trace.n_parameters == sum(p.numel() for p in clf.net_.module_.parameters())


def test_save_model_refuses_a_module_backbone(tmp_path):
    X, y = make_images(n=6, size=8)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    clf = CNNImageClassifier(backbone=module, **FAST).fit(X, y)
    with pytest.raises(TypeError, match=r"backbone=Sequential\): it is Python code"):
        save_model(clf, tmp_path / "model.safetensors")


def test_image_files_get_the_weights_normalization(resnet18_state, tmp_path):
    X, y = make_images(n=8)
    for i, (pixels, label) in enumerate(zip(X, y)):
        (tmp_path / "images" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "images" / label / f"{i}.png")
    paths, labels = load_image_folder(
        tmp_path / "images", paths_only=True, return_X_y=True
    )
    clf = CNNImageClassifier(backbone="resnet18", weights="DEFAULT", **FAST)
    clf.fit(paths, labels)
    assert clf.input_normalization_["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert clf.predict(paths).shape == (8,)
