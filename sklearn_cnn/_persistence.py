"""Saving and loading fitted models without pickle: safetensors plus JSON.

A model file is one safetensors file. Its tensors are the numbers: the network's
``state_dict`` (batch-norm buffers included), the loss's class weights and the
fitted arrays of transformers (``mean_``, ``std_``). Its ``__metadata__`` header
holds, as strings:

``format``
    ``"sklearn-cnn model"``.
``format_version``
    ``"1"``; :func:`load_model` refuses versions it does not know.
``sklearn_cnn_version``, ``torch_version``, ``scikit_learn_version``
    The versions that wrote the file.
``model``
    A JSON description of the estimator: its class (a name from a fixed list of
    allowed classes), its constructor parameters, its fitted attributes, and for
    the classifier the network's architecture and prediction settings. Nested
    estimators (Pipeline steps, augmenters) are described the same way.
    JSON has no tuples, non-finite floats or non-string keys, so those are
    written as one-key objects: ``{"__tuple__": [...]}``, ``{"__float__": "nan"}``,
    ``{"__dict__": [[key, value], ...]}``; an array is ``{"__ndarray__": ...}`` (in
    the JSON) or ``{"__tensor__": ...}`` (a tensor of the file), an estimator
    ``{"__estimator__": ...}``.
``checksum``
    ``"sha256:"`` and the SHA-256 of the whole file, computed with the 64 hex
    digits of this checksum replaced by zeros.

Loading parses JSON and safetensors only, and builds nothing but the allowed
classes from their parameters; it never unpickles, so a file cannot run code.
Everything is checked (container, format version, checksum, classes, parameters,
the name, shape and dtype of every tensor) before any weight is used.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import re
import struct
import tempfile
import warnings
from numbers import Integral, Real
from pathlib import Path, PurePath

import numpy as np
import safetensors
import safetensors.torch
import sklearn
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted

from ._backbones import BackboneNetwork
from ._classifier import CNNImageClassifier
from ._network import ConvNet
from ._training import PredictionSettings

FORMAT = "sklearn-cnn model"
FORMAT_VERSION = 1
_READABLE_VERSIONS = (1,)

_CHECKSUM_PREFIX = "sha256:"
_CHECKSUM_PLACEHOLDER = _CHECKSUM_PREFIX + "0" * 64
# A safetensors header above this size is not one this module wrote.
_MAX_HEADER_BYTES = 100 * 2**20

# A backbone is rebuilt from its name with random weights, then the file's fill it.
_NETWORK_ARCHITECTURES = {"BackboneNetwork": BackboneNetwork, "ConvNet": ConvNet}

# Fitted arrays kept in the JSON description, readable, whatever their dtype.
_JSON_ARRAY_ATTRIBUTES = frozenset({"classes_", "feature_names_in_"})

_TENSOR_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
# Kinds of numpy dtypes an "__ndarray__" may hold: bool, ints, floats, str, object.
_JSON_ARRAY_KINDS = frozenset("biufUO")
_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_FITTED_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*_\Z")
# Fitted attributes stored in the file's network description, not as values.
_NETWORK_STATE = {"net_", "prediction_settings_"}

_PICKLE_HINT = (
    "Save this model with pickle or joblib instead, and load such files only from "
    "sources you trust: unlike save_model files, they can run code when loaded."
)


def _allowed_classes() -> dict[str, type]:
    """The classes a model file may name: this package's estimators and Pipeline."""
    import sklearn_cnn
    from sklearn_cnn import augmentation, preprocessing

    classes = {"sklearn.pipeline.Pipeline": Pipeline}
    for module in (sklearn_cnn, preprocessing, augmentation):
        for name in module.__all__:
            candidate = getattr(module, name)
            if (
                inspect.isclass(candidate)
                and issubclass(candidate, BaseEstimator)
                and not name.startswith("Base")
            ):
                classes[f"{module.__name__}.{name}"] = candidate
    return classes


# -- saving ----------------------------------------------------------------------


def save_model(obj, path):
    """Save a fitted model to a file that loads without pickle.

    The file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file:
    the network's weights, batch-norm statistics and the transformers' fitted
    arrays as tensors, and a JSON description of the model (classes, image
    shape, parameters, fitted attributes, training history, library versions)
    with a SHA-256 checksum in its header. :func:`load_model` reads it back
    without running any code from the file, unlike ``pickle`` and ``joblib``.

    Parameters
    ----------
    obj : CNNImageClassifier or Pipeline
        A fitted :class:`~sklearn_cnn.CNNImageClassifier`, or a fitted
        :class:`~sklearn.pipeline.Pipeline` of this package's transformers,
        augmenters and classifier; any other fitted estimator of
        :mod:`sklearn_cnn`, :mod:`sklearn_cnn.preprocessing` or
        :mod:`sklearn_cnn.augmentation` works too. Its parameters must be
        describable in JSON: numbers, strings, booleans, None, tuples, lists and
        dicts of those, and estimators of this package. A custom ``module``,
        optimizer class or callbacks are refused: save such a model with
        ``pickle`` or ``joblib``.
    path : str or path-like
        Where to write the file, replacing any file there (atomically: a
        failure leaves the previous file whole). ``.safetensors`` is the usual
        extension.

    Returns
    -------
    path : pathlib.Path
        The path written.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        When ``obj`` or one of its Pipeline steps is not fitted.
    TypeError
        When ``obj`` holds something that cannot be described in JSON, such as a
        custom network ``module``.

    See Also
    --------
    load_model : Load a model saved with this function.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from sklearn_cnn import CNNImageClassifier, load_model, save_model
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 10)
    >>> clf = CNNImageClassifier(filters=(4,), epochs=1, random_state=0).fit(X, y)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_model(clf, Path(folder) / "model.safetensors")
    ...     loaded = load_model(path)
    >>> bool(np.array_equal(loaded.predict_proba(X), clf.predict_proba(X)))
    True
    """
    path = Path(path)
    _check_fitted(obj)
    writer = _Writer(_allowed_classes())
    description = writer.describe(obj, "model")
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "sklearn_cnn_version": _library_version(),
        "torch_version": torch.__version__,
        "scikit_learn_version": sklearn.__version__,
        "model": json.dumps(description, allow_nan=False, separators=(",", ":")),
        "checksum": _CHECKSUM_PLACEHOLDER,
    }
    content = safetensors.torch.save(writer.tensors, metadata=metadata)
    header_end = 8 + struct.unpack("<Q", content[:8])[0]
    placeholder = _CHECKSUM_PLACEHOLDER.encode()
    if content.count(placeholder, 0, header_end) != 1:
        # A parameter spelled exactly like the placeholder: vanishingly unlikely.
        raise ValueError(
            "Cannot place the checksum: the model description contains the text "
            f"{_CHECKSUM_PLACEHOLDER!r}."
        )
    checksum = _CHECKSUM_PREFIX + hashlib.sha256(content).hexdigest()
    content = content.replace(placeholder, checksum.encode(), 1)
    _write_atomically(path, content)
    return path


def _check_fitted(obj) -> None:
    if not isinstance(obj, BaseEstimator):
        raise TypeError(
            "save_model expects a fitted CNNImageClassifier or a fitted Pipeline of "
            f"sklearn_cnn estimators; got an object of type {type(obj).__name__}."
        )
    steps = [("", obj)]
    if isinstance(obj, Pipeline):
        steps += [(name, step) for name, step in obj.steps]
    for name, step in steps:
        if step is None or isinstance(step, str):
            continue  # "passthrough"
        try:
            check_is_fitted(step)
        except NotFittedError:
            what = (
                f"The Pipeline step {name!r} ({type(step).__name__})"
                if name
                else (f"This {type(step).__name__}")
            )
            raise NotFittedError(
                f"{what} is not fitted yet; save_model saves fitted models only. "
                "Call fit before saving."
            ) from None


def _library_version() -> str:
    from sklearn_cnn import __version__

    return __version__


def _write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` so that a failure mid-write keeps any previous file whole."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


class _NotDescribable(TypeError):
    """A value that the JSON description cannot hold."""


class _Writer:
    """Turns an estimator into a JSON description plus named tensors."""

    def __init__(self, allowed_classes: dict[str, type]):
        self.class_names = {cls: name for name, cls in allowed_classes.items()}
        self.tensors: dict[str, torch.Tensor] = {}

    def describe(self, estimator, path: str) -> dict:
        cls = type(estimator)
        if cls not in self.class_names:
            raise TypeError(
                f"save_model cannot describe an object of class {cls.__module__}."
                f"{cls.__qualname__}: a model file may only hold estimators of "
                "sklearn_cnn, sklearn_cnn.preprocessing and sklearn_cnn.augmentation "
                f"and sklearn.pipeline.Pipeline. {_PICKLE_HINT}"
            )
        if isinstance(estimator, CNNImageClassifier):
            _check_network_describable(estimator)
        params = {
            name: self.encode(
                value, f"{path}.{name}", where=f"parameter {name!r} of {cls.__name__}"
            )
            for name, value in estimator.get_params(deep=False).items()
        }
        fitted = {}
        for name, value in vars(estimator).items():
            if not _FITTED_NAME.match(name) or name in _NETWORK_STATE:
                continue
            where = f"fitted attribute {name!r} of {cls.__name__}"
            if _goes_in_tensor(name, value):
                fitted[name] = self.add_tensor(f"{path}.{name}", value, where=where)
            else:
                fitted[name] = self.encode(value, f"{path}.{name}", where=where)
        description = {"class": self.class_names[cls], "params": params}
        description["fitted"] = fitted
        if isinstance(estimator, CNNImageClassifier) and hasattr(estimator, "net_"):
            description["network"] = self.describe_network(estimator, path)
        return description

    def describe_network(self, classifier: CNNImageClassifier, path: str) -> dict:
        net = classifier.net_
        module_prefix, criterion_prefix = (
            f"{path}.net_.module.",
            f"{path}.net_.criterion.",
        )
        for name, tensor in net.module_.state_dict().items():
            self.add_tensor(module_prefix + name, tensor)
        for name, tensor in net.criterion_.state_dict().items():
            self.add_tensor(criterion_prefix + name, tensor)
        return {
            "architecture": type(net.module_).__name__,
            "prediction": classifier.prediction_settings_.to_json(),
            "module_tensors": module_prefix,
            "criterion_tensors": criterion_prefix,
        }

    def add_tensor(self, name: str, value, *, where: str = "network") -> dict:
        if name in self.tensors:
            raise ValueError(
                f"Two tensors of the model would be named {name!r}; rename the "
                "Pipeline steps so that no step name contains a dot."
            )
        tensor = None
        if isinstance(value, np.ndarray):
            native = value.astype(value.dtype.newbyteorder("="), copy=False)
            try:
                tensor = torch.from_numpy(np.ascontiguousarray(native))
            except TypeError:
                pass  # a dtype torch lacks, such as float128
        elif isinstance(value, torch.Tensor):
            tensor = value.detach()
        if tensor is None or tensor.dtype not in _TENSOR_DTYPES:
            raise _NotDescribable(
                f"save_model cannot store an array of dtype {value.dtype}, the "
                f"{where}; supported dtypes: bool, ints, floats. {_PICKLE_HINT}"
            )
        self.tensors[name] = tensor.to("cpu").contiguous()
        return {
            "__tensor__": {
                "name": name,
                "dtype": _TENSOR_DTYPES[tensor.dtype],
                "shape": list(tensor.shape),
            }
        }

    def encode(self, value, path: str, *, where: str):
        """The JSON form of a parameter or fitted value (estimators described)."""
        if value is None or isinstance(value, (bool, str, np.bool_)):
            return value if not isinstance(value, np.bool_) else bool(value)
        if isinstance(value, Integral):
            return int(value)
        if isinstance(value, Real):
            value = float(value)
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, tuple):
            return {
                "__tuple__": [self.encode(item, path, where=where) for item in value]
            }
        if isinstance(value, list):
            encoded = []
            for index, item in enumerate(value):
                # Steps (name, estimator) are found in the file by their name.
                named = isinstance(item, tuple) and item and isinstance(item[0], str)
                item_path = f"{path}.{item[0] if named else index}"
                encoded.append(self.encode(item, item_path, where=where))
            return encoded
        if isinstance(value, dict):
            if all(isinstance(key, str) and not key.startswith("__") for key in value):
                return {
                    key: self.encode(item, f"{path}.{key}", where=where)
                    for key, item in value.items()
                }
            return {
                "__dict__": [
                    [
                        self.encode(key, path, where=where),
                        self.encode(item, path, where=where),
                    ]
                    for key, item in value.items()
                ]
            }
        if isinstance(value, np.ndarray):
            return _encode_json_array(value, where)
        if isinstance(value, PurePath):
            return {"__path__": str(value)}
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        if isinstance(value, BaseEstimator):
            return {"__estimator__": self.describe(value, path)}
        raise _NotDescribable(
            f"save_model cannot describe {_short_repr(value)} of type "
            f"{type(value).__name__}, "
            f"the {where}. {_PICKLE_HINT}"
        )


def _goes_in_tensor(name: str, value) -> bool:
    return (
        isinstance(value, np.ndarray)
        and value.dtype.kind in "biuf"
        and name not in _JSON_ARRAY_ATTRIBUTES
    )


def _encode_json_array(value: np.ndarray, where: str) -> dict:
    if value.dtype.kind not in _JSON_ARRAY_KINDS or value.ndim != 1:
        raise _NotDescribable(
            f"save_model cannot describe an array of dtype {value.dtype} and shape "
            f"{value.shape}, the {where}. {_PICKLE_HINT}"
        )
    items = value.tolist()
    for item in items:
        if not isinstance(item, (bool, int, float, str)):
            raise _NotDescribable(
                f"save_model cannot describe the array element {item!r} of type "
                f"{type(item).__name__}, in the {where}. {_PICKLE_HINT}"
            )
    items = [
        item
        if not isinstance(item, float) or math.isfinite(item)
        else {"__float__": repr(item)}
        for item in items
    ]
    return {"__ndarray__": {"dtype": value.dtype.str, "values": items}}


def _check_network_describable(classifier: CNNImageClassifier) -> None:
    for name in ("module", "backbone"):
        value = getattr(classifier, name)
        if value is None or (name == "backbone" and isinstance(value, str)):
            continue
        raise TypeError(
            "save_model cannot save a CNNImageClassifier with a custom network: "
            f"{name}={_short_repr(value)} is Python code, which a "
            "model file cannot describe in JSON (load_model only rebuilds the "
            "built-in network and backbones given by name). "
            f"{_PICKLE_HINT}"
        )
    for name in ("optimizer", "callbacks"):
        value = getattr(classifier, name)
        if value is not None and not isinstance(value, str) and value != []:
            raise TypeError(
                f"save_model cannot save a CNNImageClassifier with {name}="
                f"{_short_repr(value)}: only the built-in optimizers (by name) and no "
                f"callbacks can be described in JSON. {_PICKLE_HINT}"
            )


def _short_repr(value) -> str:
    """A one-line name for a class or an object (module reprs span many lines)."""
    if inspect.isclass(value):
        return f"{value.__module__}.{value.__qualname__}"
    text = repr(value)
    if "\n" in text or len(text) > 80:
        return f"<{type(value).__qualname__} object>"
    return text


# -- loading ---------------------------------------------------------------------


def load_model(path, *, device=None):
    """Load a model saved with :func:`save_model`, without running code from it.

    The file is checked completely before any weight is used: its container,
    format version and checksum; the classes it names, which must be
    estimators of this package or :class:`~sklearn.pipeline.Pipeline`; their
    parameters; and the name, shape and dtype of every tensor against the
    network its description rebuilds. Nothing is unpickled.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save_model`.
    device : str, torch.device or None, default=None
        Where to put the networks. None uses the device the model was trained
        on when it is available here, else the CPU (with a warning, as for
        pickles). ``"cpu"``, ``"cuda"``, ``"auto"`` and the like load there.

    Returns
    -------
    model : estimator
        The fitted estimator, ready to predict: a
        :class:`~sklearn_cnn.CNNImageClassifier`, a
        :class:`~sklearn.pipeline.Pipeline`, or whatever was saved.

    Raises
    ------
    ValueError
        When the file is truncated, damaged (checksum mismatch), of an
        unsupported format version, names an unknown class or architecture,
        or lacks, adds or misshapes a tensor.

    See Also
    --------
    save_model : Save a fitted model to such a file.

    Notes
    -----
    The optimizer's state is not saved: ``fit`` with ``warm_start=True`` on a
    loaded classifier continues the epoch count and history but starts the
    optimizer afresh.

    Examples
    --------
    See :func:`save_model`.
    """
    path = Path(path)
    content = path.read_bytes()
    header, data_start = _read_container(content, path)
    metadata = _read_metadata(header, path)
    _verify_checksum(content, data_start, metadata["checksum"], path)
    try:
        description = json.loads(metadata["model"])
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"The model description in {path} is not valid JSON ({error})."
        ) from None
    reader = _Reader(_allowed_classes(), header, path, device)
    reader.check_classes(description)
    model = reader.build(description)
    reader.check_tensors()
    try:
        tensors = safetensors.torch.load(content)
    except safetensors.SafetensorError as error:
        raise ValueError(f"{path} is damaged: {error}") from None
    reader.fill(tensors)
    if reader.moved_to_cpu:
        warnings.warn(
            f"The model in {path} was trained on CUDA, which is not available "
            "here; it was loaded on the CPU.",
            UserWarning,
            stacklevel=2,
        )
    saved_version = metadata.get("sklearn_cnn_version")
    if saved_version != _library_version():
        warnings.warn(
            f"{path} was written by sklearn-cnn {saved_version}, and is loaded by "
            f"version {_library_version()}; check its predictions.",
            UserWarning,
            stacklevel=2,
        )
    return model


def _read_container(content: bytes, path: Path) -> tuple[dict, int]:
    """The safetensors header, and where the tensor data starts."""
    size = len(content)
    if size < 8:
        raise ValueError(
            f"{path} is truncated: it holds {size} bytes, fewer than the 8 that start "
            "any safetensors file. Copy or download the file again."
        )
    header_size = struct.unpack("<Q", content[:8])[0]
    if header_size > _MAX_HEADER_BYTES:
        raise ValueError(
            f"{path} is not a model file written by sklearn_cnn.save_model: its "
            f"first 8 bytes announce a header of {header_size} bytes."
        )
    if 8 + header_size > size:
        raise ValueError(
            f"{path} is truncated: its header should take {header_size} bytes after "
            f"the first 8, but the file holds {size} bytes in all. Copy or download "
            "the file again."
        )
    try:
        header = json.loads(content[8 : 8 + header_size])
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"The header of {path} is not valid JSON ({error}): the file is damaged "
            "or is not a model file written by sklearn_cnn.save_model."
        ) from None
    if not isinstance(header, dict):
        raise ValueError(f"The header of {path} is not a safetensors header.")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(isinstance(offset, int) for offset in offsets)
            and isinstance(entry.get("shape"), list)
            and all(isinstance(side, int) and side >= 0 for side in entry["shape"])
            and isinstance(entry.get("dtype"), str)
        ):
            raise ValueError(
                f"The header of {path} describes tensor {name!r} as {entry!r}; "
                "expected a dtype, a shape and two data offsets."
            )
        data_end = max(data_end, offsets[1])
    data_start = 8 + header_size
    if data_start + data_end > size:
        raise ValueError(
            f"{path} is truncated: its header announces {data_end} bytes of tensor "
            f"data, but only {size - data_start} follow it. Copy or download the "
            "file again."
        )
    if data_start + data_end < size:
        raise ValueError(
            f"{path} is damaged: {size - data_start - data_end} bytes follow the "
            f"{data_end} bytes of tensor data its header announces."
        )
    return header, data_start


def _read_metadata(header: dict, path: Path) -> dict:
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else None
        raise ValueError(
            f"{path} is not a model file written by sklearn_cnn.save_model: its "
            f"metadata should say format={FORMAT!r}, but says format={found!r}."
        )
    version = metadata.get("format_version")
    if version not in {str(readable) for readable in _READABLE_VERSIONS}:
        readable = ", ".join(str(v) for v in _READABLE_VERSIONS)
        raise ValueError(
            f"{path} is in model file format version {version}, but this version of "
            f"sklearn-cnn ({_library_version()}) reads format version {readable} "
            "only. Load it with the sklearn-cnn version that wrote it "
            f"({metadata.get('sklearn_cnn_version')}) or a newer one."
        )
    for key in ("model", "checksum"):
        if not isinstance(metadata.get(key), str):
            raise ValueError(f"The metadata of {path} has no {key!r} entry.")
    return metadata


def _verify_checksum(content: bytes, data_start: int, stored: str, path: Path) -> None:
    if not re.fullmatch(re.escape(_CHECKSUM_PREFIX) + "[0-9a-f]{64}", stored):
        raise ValueError(
            f"The checksum of {path} is {stored!r}; expected 'sha256:' followed by "
            "64 hexadecimal digits."
        )
    seal = stored.encode()
    if content.count(seal, 0, data_start) != 1:
        raise ValueError(f"The checksum of {path} cannot be located in its header.")
    blank = content.replace(seal, _CHECKSUM_PLACEHOLDER.encode(), 1)
    actual = _CHECKSUM_PREFIX + hashlib.sha256(blank).hexdigest()
    if actual != stored:
        raise ValueError(
            f"Checksum mismatch: {path} says its contents have checksum {stored}, "
            f"but they have {actual}. The file was altered or damaged after it was "
            "saved; do not use it, get a fresh copy."
        )


class _Reader:
    """Builds estimators from a checked description; loads tensors last."""

    def __init__(self, allowed_classes: dict[str, type], header: dict, path, device):
        self.classes = allowed_classes
        self.file_tensors = {
            name: (entry["dtype"], tuple(entry["shape"]))
            for name, entry in header.items()
            if name != "__metadata__"
        }
        self.path = path
        self.device = device
        # name -> (dtype, shape) the model needs, and where each tensor goes.
        self.expected: dict[str, tuple[str, tuple]] = {}
        self.array_targets: list[tuple[object, str, str]] = []
        self.networks: list[tuple[CNNImageClassifier, str, str]] = []
        self.moved_to_cpu = False

    def error(self, message: str) -> ValueError:
        return ValueError(f"Malformed model description in {self.path}: {message}")

    # Classes first: an unknown name stops loading before anything is built.
    def check_classes(self, description) -> None:
        if not isinstance(description, dict):
            raise self.error(f"expected an estimator description, got {description!r}.")
        name = description.get("class")
        if name not in self.classes:
            raise ValueError(
                f"{self.path} describes an object of class {name!r}, an unknown "
                "architecture: load_model only builds these classes: "
                f"{sorted(self.classes)}. The file may come from a newer "
                "sklearn-cnn, or have been altered."
            )
        network = description.get("network")
        if isinstance(network, dict):
            architecture = network.get("architecture")
            if architecture not in _NETWORK_ARCHITECTURES:
                raise ValueError(
                    f"{self.path} describes a network of architecture "
                    f"{architecture!r}, an unknown architecture: load_model only "
                    f"rebuilds {sorted(_NETWORK_ARCHITECTURES)}."
                )
        for nested in _nested_estimators(description.get("params")):
            self.check_classes(nested)

    def build(self, description) -> BaseEstimator:
        if not isinstance(description, dict) or not {"class", "params"} <= set(
            description
        ):
            raise self.error(f"expected an estimator description, got {description!r}.")
        cls = self.classes[description["class"]]
        params = description["params"]
        if not isinstance(params, dict):
            raise self.error(f"the parameters of {cls.__name__} are not an object.")
        accepted = set(inspect.signature(cls).parameters)
        unknown = sorted(set(params) - accepted)
        if unknown:
            raise ValueError(
                f"{self.path} gives {cls.__name__} the parameters {unknown}, which it "
                f"does not have; expected some of {sorted(accepted)}."
            )
        estimator = cls(**{name: self.decode(value) for name, value in params.items()})
        # The parameters come from the file: check them as fit would.
        estimator._validate_params()
        if isinstance(estimator, CNNImageClassifier):
            estimator._check_filters()
            if estimator.callbacks:
                raise self.error("a CNNImageClassifier saved with callbacks.")
        fitted = description.get("fitted", {})
        if not isinstance(fitted, dict):
            raise self.error(
                f"the fitted attributes of {cls.__name__} are not an object."
            )
        for name, value in fitted.items():
            if (
                not isinstance(name, str)
                or not _FITTED_NAME.match(name)
                or name == "net_"
            ):
                raise self.error(f"{name!r} is not a fitted attribute name.")
            if isinstance(value, dict) and set(value) == {"__tensor__"}:
                self.array_targets.append((estimator, name, self.expect(value)))
            else:
                setattr(estimator, name, self.decode(value))
        network = description.get("network")
        if isinstance(estimator, CNNImageClassifier) and network is not None:
            self.build_network(estimator, network)
        elif network is not None:
            raise self.error(f"{cls.__name__} has no network.")
        return estimator

    def build_network(self, classifier: CNNImageClassifier, network) -> None:
        if not isinstance(network, dict):
            raise self.error(f"expected a network description, got {network!r}.")
        for name in ("classes_", "image_shape_", "history_"):
            if not hasattr(classifier, name):
                raise self.error(f"the classifier lacks the fitted attribute {name}.")
        device = self.resolve_device(getattr(classifier, "device_", "cpu"))
        try:
            settings = PredictionSettings.from_json(network.get("prediction") or {})
        except ValueError as error:
            raise self.error(str(error)) from None
        classifier._restore_net(device)
        classifier.prediction_settings_ = settings
        net = classifier.net_
        if type(net.module_) is not _NETWORK_ARCHITECTURES[network["architecture"]]:
            raise self.error(
                f"the parameters build a {type(net.module_).__name__} network, but "
                f"the file says {network['architecture']}."
            )
        prefixes = []
        for key, state in (
            ("module_tensors", net.module_.state_dict()),
            ("criterion_tensors", net.criterion_.state_dict()),
        ):
            prefix = network.get(key)
            if not isinstance(prefix, str):
                raise self.error(f"the network has no {key!r} prefix.")
            for name, tensor in state.items():
                self.expect(
                    {
                        "__tensor__": {
                            "name": prefix + name,
                            "dtype": _TENSOR_DTYPES.get(tensor.dtype),
                            "shape": list(tensor.shape),
                        }
                    }
                )
            prefixes.append(prefix)
        self.networks.append((classifier, *prefixes))

    def resolve_device(self, saved) -> torch.device:
        from .utils._runtime import resolve_device

        if self.device is not None:
            return resolve_device(self.device)
        saved = torch.device(saved)
        if saved.type == "cuda" and not torch.cuda.is_available():
            self.moved_to_cpu = True
            return torch.device("cpu")
        return saved

    def expect(self, value: dict) -> str:
        spec = value["__tensor__"]
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise self.error(f"expected a tensor reference, got {value!r}.")
        name = spec["name"]
        if name in self.expected:
            raise self.error(f"two objects use the tensor {name!r}.")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) for s in shape):
            raise self.error(f"tensor {name!r} has no valid shape.")
        self.expected[name] = (spec.get("dtype"), tuple(shape))
        return name

    def check_tensors(self) -> None:
        """Compare the tensors the model needs with the file's, before loading."""
        missing = sorted(set(self.expected) - set(self.file_tensors))
        if missing:
            raise ValueError(
                f"{self.path} lacks {len(missing)} tensor(s) the model needs: "
                f"{_shorten(missing)}. The model expects {len(self.expected)} "
                f"tensors and the file holds {len(self.file_tensors)}; it is "
                "incomplete or was altered."
            )
        extra = sorted(set(self.file_tensors) - set(self.expected))
        if extra:
            raise ValueError(
                f"{self.path} holds {len(extra)} tensor(s) that the model does not "
                f"use: {_shorten(extra)}. The model expects only its "
                f"{len(self.expected)} tensors; the file was altered or written for "
                "another model."
            )
        for name, (dtype, shape) in self.expected.items():
            file_dtype, file_shape = self.file_tensors[name]
            if file_shape != shape:
                raise ValueError(
                    f"Tensor {name!r} in {self.path} has shape {file_shape}, but the "
                    f"model described in the file needs shape {shape}."
                )
            if file_dtype != dtype:
                raise ValueError(
                    f"Tensor {name!r} in {self.path} has dtype {file_dtype}, but the "
                    f"model described in the file needs dtype {dtype}."
                )

    def fill(self, tensors: dict[str, torch.Tensor]) -> None:
        for estimator, name, tensor_name in self.array_targets:
            setattr(estimator, name, tensors[tensor_name].numpy().copy())
        for classifier, module_prefix, criterion_prefix in self.networks:
            net = classifier.net_
            for prefix, target in (
                (module_prefix, net.module_),
                (criterion_prefix, net.criterion_),
            ):
                state = {
                    name[len(prefix) :]: tensor
                    for name, tensor in tensors.items()
                    if name.startswith(prefix)
                }
                target.load_state_dict(state, strict=True)

    def decode(self, value):
        """The Python value of a JSON parameter or fitted attribute."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(item) for item in value]
        if not isinstance(value, dict):
            raise self.error(f"unexpected value {value!r}.")
        tags = [key for key in value if key.startswith("__")]
        if not tags:
            return {key: self.decode(item) for key, item in value.items()}
        if len(value) != 1:
            raise self.error(f"unexpected object {value!r}.")
        tag, content = next(iter(value.items()))
        if tag == "__tuple__" and isinstance(content, list):
            return tuple(self.decode(item) for item in content)
        if tag == "__float__" and content in _FLOAT_NAMES:
            return _FLOAT_NAMES[content]
        if tag == "__dict__" and isinstance(content, list):
            if not all(isinstance(pair, list) and len(pair) == 2 for pair in content):
                raise self.error(f"expected [key, value] pairs, got {content!r}.")
            try:
                return {self.decode(key): self.decode(item) for key, item in content}
            except TypeError as error:
                raise self.error(f"unusable dict key ({error}).") from None
        if tag == "__path__" and isinstance(content, str):
            return Path(content)
        if tag == "__device__" and isinstance(content, str):
            try:
                return torch.device(content)
            except RuntimeError as error:
                raise self.error(f"invalid device {content!r} ({error}).") from None
        if tag == "__ndarray__" and isinstance(content, dict):
            return self.decode_array(content)
        if tag == "__estimator__":
            return self.build(content)
        raise self.error(f"unexpected object {value!r}.")

    def decode_array(self, content: dict) -> np.ndarray:
        dtype_name, values = content.get("dtype"), content.get("values")
        try:
            dtype = np.dtype(dtype_name)
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or dtype.kind not in _JSON_ARRAY_KINDS:
            raise self.error(f"unsupported array dtype {dtype_name!r}.")
        if not isinstance(values, list):
            raise self.error(f"array values must be a list, got {values!r}.")
        items = [self.decode(item) for item in values]
        if not all(isinstance(item, (bool, int, float, str)) for item in items):
            raise self.error(f"array values must be scalars, got {values!r}.")
        if dtype.kind == "U" and any(
            not isinstance(item, str) or len(item) > dtype.itemsize // 4
            for item in items
        ):
            raise self.error(f"values {values!r} do not fit dtype {dtype}.")
        array = np.empty(len(items), dtype=dtype)
        try:
            array[:] = items
        except (TypeError, ValueError) as error:
            raise self.error(f"values {values!r} do not fit dtype {dtype}.") from error
        return array


def _nested_estimators(value):
    """The descriptions of the estimators nested in a JSON value, outermost first."""
    if isinstance(value, list):
        for item in value:
            yield from _nested_estimators(item)
    elif isinstance(value, dict):
        if set(value) == {"__estimator__"}:
            yield value["__estimator__"]
            return
        for item in value.values():
            yield from _nested_estimators(item)


def _shorten(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
