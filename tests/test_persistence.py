"""Tests of save_model and load_model: safe, pickle-free model files."""

import hashlib
import json
import pickle
import subprocess
import sys
import textwrap

import joblib
import numpy as np
import pytest
import safetensors.torch
import torch
from conftest import make_images
from safetensors import safe_open
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline

from sklearn_cnn import CNNImageClassifier, load_model, save_model

FAST = dict(filters=(4,), dense_units=8, epochs=2, batch_size=16, random_state=0)


@pytest.fixture(scope="module")
def fitted():
    X, y = make_images(n_samples=24)
    return CNNImageClassifier(**FAST).fit(X, y), X


@pytest.fixture
def model_file(fitted, tmp_path):
    return save_model(fitted[0], tmp_path / "model.safetensors")


# -- helpers that edit a model file the way an attacker or a bad copy would ------


def read_file(path):
    """The tensors and the metadata of a model file, read with safetensors."""
    with safe_open(path, framework="pt") as file:
        return {name: file.get_tensor(name) for name in file.keys()}, file.metadata()


def file_checksum(path):
    """The checksum of a model file, computed as docs/persistence.rst describes."""
    with safe_open(path, framework="pt") as file:
        metadata = file.metadata()
        del metadata["checksum"]
        digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
        for name in sorted(file.keys()):
            dtype, shape = (
                file.get_slice(name).get_dtype(),
                file.get_slice(name).get_shape(),
            )
            digest.update(f"{name} {dtype} {list(shape)}".encode())
            digest.update(file.get_tensor(name).reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


def rewrite(path, *, tensors=None, metadata=None, model=None):
    """Rewrite a model file through edit functions, with a valid checksum."""
    file_tensors, file_metadata = read_file(path)
    if tensors is not None:
        tensors(file_tensors)
    if model is not None:
        description = json.loads(file_metadata["model"])
        model(description)
        file_metadata["model"] = json.dumps(description)
    if metadata is not None:
        metadata(file_metadata)
    safetensors.torch.save_file(file_tensors, path, file_metadata)
    file_metadata["checksum"] = file_checksum(path)
    safetensors.torch.save_file(file_tensors, path, file_metadata)


@pytest.fixture
def no_weights_used(monkeypatch):
    """Fail the test if a state dict is loaded: errors must come before."""

    def refuse(*args, **kwargs):
        raise AssertionError("a weight was used before the file was checked")

    monkeypatch.setattr(torch.nn.Module, "load_state_dict", refuse)


# -- round trips -------------------------------------------------------------------


def test_round_trip_in_a_fresh_process_gives_identical_predict_proba(
    fitted, model_file, tmp_path
):
    clf, X = fitted
    np.save(tmp_path / "X.npy", X)
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import torch
        from sklearn_cnn import load_model

        torch.set_num_threads(1)
        model_path, X_path, out_path = sys.argv[1:]
        model = load_model(model_path)
        proba = model.predict_proba(np.load(X_path, allow_pickle=False))
        np.save(out_path, proba, allow_pickle=False)
        """
    )
    subprocess.run(
        [sys.executable, "-c", code, model_file, tmp_path / "X.npy", tmp_path / "p"],
        check=True,
        timeout=120,
    )
    proba = np.load(tmp_path / "p.npy", allow_pickle=False)
    assert np.array_equal(proba, clf.predict_proba(X))


def test_loading_never_unpickles(fitted, model_file, monkeypatch):
    clf, X = fitted

    def refuse(*args, **kwargs):
        raise AssertionError("load_model must not unpickle")

    for owner, name in [
        (pickle, "load"),
        (pickle, "loads"),
        (pickle, "Unpickler"),
        (torch, "load"),
        (joblib, "load"),
    ]:
        monkeypatch.setattr(owner, name, refuse)
    loaded = load_model(model_file)
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_fitted_state_and_parameters_round_trip(fitted, model_file):
    clf, X = fitted
    loaded = load_model(model_file)
    assert loaded.get_params() == clf.get_params()
    assert isinstance(loaded.filters, tuple)
    for name in ("image_shape_", "n_features_in_", "history_", "loss_curve_"):
        assert getattr(loaded, name) == getattr(clf, name)
    assert loaded.n_iter_ == clf.n_iter_ == 2
    assert loaded.validation_scores_ is None
    assert loaded.device_ == "cpu"
    assert np.array_equal(loaded.predict(X), clf.predict(X))
    # Batch-norm buffers come back too, not only the trained parameters.
    for key, value in clf.net_.module_.state_dict().items():
        assert torch.equal(loaded.net_.module_.state_dict()[key], value), key


def test_float_input_after_uint8_fit_is_scaled_like_the_original(fitted, model_file):
    clf, X = fitted
    loaded = load_model(model_file)
    X_float = X.astype(np.float32) / 255
    assert np.array_equal(loaded.predict_proba(X_float), clf.predict_proba(X_float))
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize(
    "labels",
    [("cat", "dog"), (3, 7), (False, True), (1.0, 2.0)],
    ids=["str", "int", "bool", "float"],
)
def test_labels_keep_their_dtype(labels, tmp_path):
    X, y = make_images(n_samples=16, labels=labels)
    clf = CNNImageClassifier(**{**FAST, "epochs": 1}).fit(X, y)
    loaded = load_model(save_model(clf, tmp_path / "model.safetensors"))
    assert loaded.classes_.dtype == clf.classes_.dtype
    assert np.array_equal(loaded.classes_, clf.classes_)
    assert np.array_equal(loaded.predict(X), clf.predict(X))


def test_json_parameters_round_trip(tmp_path):
    X, y = make_images(n_samples=16, labels=(1, 2))
    clf = CNNImageClassifier(
        **{**FAST, "epochs": 1},
        class_weight={1: 2.0, 2: 0.5},
        image_shape=(8, 8, 3),
        device=torch.device("cpu"),
        optimizer="sgd",
    ).fit(X.reshape(len(X), -1), y)
    loaded = load_model(save_model(clf, tmp_path / "model.safetensors"))
    assert loaded.get_params() == clf.get_params()
    assert isinstance(loaded.image_shape, tuple)
    assert isinstance(loaded.device, torch.device)
    assert torch.equal(loaded.net_.criterion_.weight, clf.net_.criterion_.weight)
    X_flat = X.reshape(len(X), -1)
    assert np.array_equal(loaded.predict_proba(X_flat), clf.predict_proba(X_flat))


def test_loaded_classifier_continues_training(fitted, model_file):
    clf, X = fitted
    loaded = load_model(model_file)
    _, y = make_images(n_samples=24)
    loaded.set_params(warm_start=True, epochs=1).fit(X, y)
    assert loaded.n_iter_ == clf.n_iter_ + 1
    assert [row["epoch"] for row in loaded.history_] == [1, 2, 3]


def test_cuda_trained_model_loads_on_the_cpu_with_a_warning(
    fitted, model_file, monkeypatch
):
    clf, X = fitted

    def trained_on_cuda(description):
        description["fitted"]["device_"] = "cuda"

    rewrite(model_file, model=trained_on_cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="trained on CUDA"):
        loaded = load_model(model_file)
    assert loaded.device_ == "cpu"
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_pipeline_round_trip(tmp_path):
    preprocessing = pytest.importorskip("sklearn_cnn.preprocessing")
    augmentation = pytest.importorskip("sklearn_cnn.augmentation")
    X, y = make_images(n_samples=24)
    augment = augmentation.RandomAugment(
        steps=[
            ("flip", augmentation.RandomHorizontalFlip(p=0.5)),
            ("rotate", augmentation.RandomRotation(degrees=10)),
        ],
        random_state=0,
    )
    pipeline = Pipeline(
        [
            ("augment", augment),
            ("scale", preprocessing.ImageScaler()),
            ("standardize", preprocessing.ImageStandardizer()),
            ("clf", CNNImageClassifier(**FAST)),
        ]
    ).fit(X, y)
    loaded = load_model(save_model(pipeline, tmp_path / "pipeline.safetensors"))
    assert isinstance(loaded, Pipeline)
    assert loaded.get_params(deep=True).keys() == pipeline.get_params(deep=True).keys()
    assert loaded.get_params()["augment__rotate__degrees"] == 10
    standardizer = loaded.named_steps["standardize"]
    original = pipeline.named_steps["standardize"]
    assert standardizer.mean_.dtype == original.mean_.dtype
    assert np.array_equal(standardizer.mean_, original.mean_)
    assert np.array_equal(standardizer.std_, original.std_)
    assert np.array_equal(loaded.predict_proba(X), pipeline.predict_proba(X))


def test_augment_parameter_round_trips(tmp_path):
    augmentation = pytest.importorskip("sklearn_cnn.augmentation")
    X, y = make_images(n_samples=16)
    clf = CNNImageClassifier(
        **{**FAST, "epochs": 1}, augment=augmentation.RandomHorizontalFlip(p=0.25)
    ).fit(X, y)
    loaded = load_model(save_model(clf, tmp_path / "model.safetensors"))
    assert isinstance(loaded.augment, augmentation.RandomHorizontalFlip)
    assert loaded.augment.p == 0.25
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_accelerator_is_left_out_and_the_loaded_model_predicts_the_same(tmp_path):
    accelerate = pytest.importorskip("accelerate")
    X, y = make_images(n_samples=16)
    accelerator = accelerate.Accelerator(cpu=True)
    clf = CNNImageClassifier(**{**FAST, "epochs": 1}, accelerator=accelerator)
    clf.fit(X, y)
    loaded = load_model(save_model(clf, tmp_path / "model.safetensors"))
    assert loaded.accelerator is None
    assert clf.accelerator is accelerator
    assert {**loaded.get_params(), "accelerator": accelerator} == clf.get_params()
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_the_file_is_read_once_through_safetensors(fitted, model_file, monkeypatch):
    clf, X = fitted

    def refuse(*args, **kwargs):
        raise AssertionError("the model file was read a second time")

    monkeypatch.setattr(type(model_file), "read_bytes", refuse)
    monkeypatch.setattr(safetensors.torch, "load", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    loaded = load_model(model_file)
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_a_failed_save_keeps_the_previous_file_whole(fitted, tmp_path, monkeypatch):
    import os

    clf, X = fitted
    path = tmp_path / "new folder" / "model.safetensors"
    assert save_model(clf, path) == path  # missing folders are created
    path.write_bytes(b"the previous file")

    def failing_fsync(*args, **kwargs):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        save_model(clf, path)
    assert path.read_bytes() == b"the previous file"
    assert os.listdir(path.parent) == [path.name]


@pytest.mark.skipif(sys.platform == "win32", reason="Windows files have no modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_the_saved_file_has_the_mode_a_normally_written_file_gets(
    fitted, tmp_path, umask
):
    import os
    import stat

    previous = os.umask(umask)
    try:
        model = save_model(fitted[0], tmp_path / "model.safetensors")
        plain = tmp_path / "plain.txt"
        plain.write_text("written with open()")
    finally:
        os.umask(previous)
    expected = stat.S_IMODE(plain.stat().st_mode)
    assert expected == 0o666 & ~umask
    assert stat.S_IMODE(model.stat().st_mode) == expected


# -- refusals at save time ------------------------------------------------------------


class _TinyNet(torch.nn.Module):
    def __init__(self, in_channels, n_classes, image_size):
        super().__init__()
        self.linear = torch.nn.Linear(in_channels, n_classes)

    def forward(self, x):
        return self.linear(x.mean(dim=(2, 3)))


@pytest.mark.parametrize("module", [_TinyNet, _TinyNet(3, 2, (8, 8))])
def test_custom_module_is_refused_with_a_pointer_to_pickle(module, tmp_path):
    X, y = make_images(n_samples=16)
    clf = CNNImageClassifier(**{**FAST, "epochs": 1}, module=module).fit(X, y)
    path = tmp_path / "model.safetensors"
    with pytest.raises(TypeError, match="custom network.*pickle or joblib"):
        save_model(clf, path)
    assert not path.exists()


def test_optimizer_class_is_refused_with_a_pointer_to_pickle(tmp_path):
    X, y = make_images(n_samples=16)
    clf = CNNImageClassifier(**{**FAST, "epochs": 1}, optimizer=torch.optim.RMSprop)
    clf.fit(X, y)
    with pytest.raises(TypeError, match="optimizer=.*pickle or joblib"):
        save_model(clf, tmp_path / "model.safetensors")


def test_random_state_instance_is_refused_with_a_pointer_to_pickle(tmp_path):
    X, y = make_images(n_samples=16)
    clf = CNNImageClassifier(**{**FAST, "epochs": 1})
    clf.set_params(random_state=np.random.RandomState(0)).fit(X, y)
    with pytest.raises(
        TypeError, match="'random_state' of CNNImageClassifier.*pickle or joblib"
    ):
        save_model(clf, tmp_path / "model.safetensors")


def test_unfitted_estimators_are_refused(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted yet.*Call fit"):
        save_model(CNNImageClassifier(), tmp_path / "model.safetensors")


def test_other_objects_are_refused(tmp_path):
    from sklearn.preprocessing import StandardScaler

    X = np.random.RandomState(0).rand(5, 3)
    with pytest.raises(TypeError, match="StandardScaler.*pickle or joblib"):
        save_model(StandardScaler().fit(X), tmp_path / "model.safetensors")


# -- damaged and altered files: clear errors before any weight is used ---------------


def _rename_class(description):
    description["class"] = "evil.RunsCode"


def _rename_architecture(description):
    description["fitted"]["net_"]["architecture"] = "EvilNet"


def _drop_tensor(tensors):
    del tensors["model.net_.module.features.1.running_var"]


def _add_tensor(tensors):
    tensors["model.net_.module.backdoor.weight"] = torch.zeros(3)


def _reshape_tensor(tensors):
    tensors["model.net_.module.classifier.2.weight"] = torch.zeros(3, 8)


def _retype_tensor(tensors):
    weight = tensors["model.net_.module.classifier.2.weight"]
    tensors["model.net_.module.classifier.2.weight"] = weight.double()


def _future_version(metadata):
    metadata["format_version"] = "99"


@pytest.mark.parametrize(
    "edit, match",
    [
        (dict(model=_rename_class), "class 'evil.RunsCode', an unknown architecture"),
        (dict(model=_rename_architecture), "'EvilNet', an unknown architecture"),
        (dict(tensors=_drop_tensor), r"lacks 1 tensor\(s\).*features.1.running_var"),
        (dict(tensors=_add_tensor), r"1 tensor\(s\) that the model does not use"),
        (dict(tensors=_reshape_tensor), r"shape \(3, 8\).*needs shape \(2, 8\)"),
        (dict(tensors=_retype_tensor), "dtype F64.*needs dtype F32"),
        (dict(metadata=_future_version), "format version 99.*reads format version 1"),
    ],
    ids=[
        "unknown-class",
        "unknown-network",
        "missing-tensor",
        "extra-tensor",
        "wrong-shape",
        "wrong-dtype",
        "format-version",
    ],
)
def test_altered_files_raise_clear_errors(model_file, edit, match, no_weights_used):
    rewrite(model_file, **edit)
    with pytest.raises(ValueError, match=match):
        load_model(model_file)


def test_tensors_that_do_not_fit_the_rebuilt_network_are_refused(
    model_file, no_weights_used
):
    # The description and the tensor agree (and the checksum is recomputed), but
    # the network that the parameters build needs another shape.
    name = "model.net_.module.classifier.2.weight"

    def reshape(tensors):
        tensors[name] = torch.zeros(3, 8)

    def describe_reshaped(description):
        module = description["fitted"]["net_"]["module"]
        module["classifier.2.weight"]["__tensor__"]["shape"] = [3, 8]

    rewrite(model_file, tensors=reshape, model=describe_reshaped)
    with pytest.raises(ValueError, match="'classifier.2.weight' differ in name, shape"):
        load_model(model_file)


@pytest.mark.parametrize("keep", [4, 100, -5], ids=["in-prefix", "in-header", "data"])
def test_truncated_file_raises_a_clear_error(model_file, keep, no_weights_used):
    content = model_file.read_bytes()
    model_file.write_bytes(content[:keep])
    with pytest.raises(ValueError, match="is truncated.*download the file again"):
        load_model(model_file)


@pytest.mark.parametrize("where", ["data", "header"])
def test_checksum_mismatch_raises_a_clear_error(model_file, where, no_weights_used):
    content = bytearray(model_file.read_bytes())
    if where == "data":
        content[-3] ^= 0x01
    else:
        position = content.index(b'lr\\":0.001')
        content[position : position + 10] = b'lr\\":0.002'
    model_file.write_bytes(bytes(content))
    with pytest.raises(ValueError, match="Checksum mismatch.*altered or damaged"):
        load_model(model_file)


def test_safetensors_file_of_another_kind_is_refused(tmp_path, no_weights_used):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a model file written by .*save_model"):
        load_model(path)


def test_tampered_parameters_are_validated(model_file, no_weights_used):
    def negative_lr(description):
        description["params"]["lr"] = -1.0

    rewrite(model_file, model=negative_lr)
    with pytest.raises(ValueError, match="'lr' parameter"):
        load_model(model_file)


def test_lr_schedule_round_trips(tmp_path):
    import numpy as np

    from sklearn_cnn import CNNImageClassifier, load_model, save_model

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    y = np.array(["cat", "dog"] * 10)
    clf = CNNImageClassifier(
        filters=(4,), epochs=2, lr_schedule="cosine", random_state=0
    ).fit(X, y)
    save_model(clf, tmp_path / "model.safetensors")
    restored = load_model(tmp_path / "model.safetensors")
    assert restored.get_params()["lr_schedule"] == "cosine"
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))
    # A warm start resumes the schedule at the saved epoch, with a fresh optimizer.
    restored.set_params(warm_start=True, epochs=1).fit(X, y)
    assert restored.n_iter_ == 3
