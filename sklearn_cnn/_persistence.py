"""Saving and loading fitted models without pickle: safetensors plus JSON.

A model file is one safetensors file (``docs/persistence.rst``): tensors, and
metadata with a checksum and a JSON description ``{"class", "params", "fitted"}``
of the estimator, which says itself what it saves (``utils/_saved_state.py``).
Loading parses JSON and safetensors only, so a file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
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

from .utils._io import write_atomically
from .utils._runtime import resolve_device
from .utils._saved_state import FITTED_NAME, PICKLE_HINT, load_saved_state, saved_state

FORMAT = "sklearn-cnn model"
FORMAT_VERSION = "1"

# The dtypes a model file may hold, by their safetensors names.
_TENSOR_DTYPES = {
    getattr(torch, name): code
    for code, name in zip(
        "F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL".split(),
        "float64 float32 float16 bfloat16 int64 int32 int16 int8 uint8 bool".split(),
    )
}


def _allowed_classes() -> dict[str, type]:
    """The classes a model file may name: this package's estimators and Pipeline."""
    import sklearn_cnn
    from sklearn_cnn import augmentation, preprocessing

    classes = {"sklearn.pipeline.Pipeline": Pipeline}
    for module in (sklearn_cnn, preprocessing, augmentation):
        for name in module.__all__:
            candidate = getattr(module, name)
            if isinstance(candidate, type) and issubclass(candidate, BaseEstimator):
                if not name.startswith("Base"):
                    classes[f"{module.__name__}.{name}"] = candidate
    return classes


def _library_version() -> str:
    from sklearn_cnn import __version__

    return __version__


def _checksum(metadata: dict, tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of the metadata but the checksum, then of each tensor by name."""
    content = {key: value for key, value in metadata.items() if key != "checksum"}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        dtype = _TENSOR_DTYPES.get(tensor.dtype, str(tensor.dtype))
        digest.update(f"{name} {dtype} {list(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


# -- saving ----------------------------------------------------------------------


def save_model(obj, path):
    """Save a fitted model to a file that loads without pickle.

    The file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file:
    the networks' weights and buffers and the fitted arrays as tensors, and a
    checksummed JSON description of the model (classes, parameters, fitted
    attributes, training history, library versions). :func:`load_model` reads
    it back without running any code from the file, unlike ``pickle`` and
    ``joblib``. See :ref:`persistence`.

    Parameters
    ----------
    obj : CNNImageClassifier or Pipeline
        A fitted :class:`~sklearn_cnn.CNNImageClassifier`, a fitted
        :class:`~sklearn.pipeline.Pipeline` of this package's steps, or another
        fitted estimator of this package. Its parameters must be numbers,
        strings, None, tuples, lists and dicts of those, or estimators of this
        package: a custom ``module``, an optimizer class, callbacks and other
        objects raise a ``TypeError`` (use ``pickle`` or ``joblib`` for such a
        model). An ``accelerator`` is left out: the loaded classifier has
        ``accelerator=None`` and predicts the same.
    path : str or path-like
        Where to write the file, replacing any file there atomically (a failure
        leaves the previous file whole); missing folders are created.

    Returns
    -------
    path : pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile
    >>> import numpy as np
    >>> from sklearn_cnn import CNNImageClassifier, load_model, save_model
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randint(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    >>> y = np.array(["cat", "dog"] * 10)
    >>> clf = CNNImageClassifier(filters=(4,), epochs=1, random_state=0).fit(X, y)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_model(clf, f"{folder}/model.safetensors")
    ...     loaded = load_model(path)
    >>> bool(np.array_equal(loaded.predict_proba(X), clf.predict_proba(X)))
    True
    """
    _check_fitted(obj)
    writer = _Writer({cls: name for name, cls in _allowed_classes().items()})
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sklearn_cnn_version": _library_version(),
        "torch_version": torch.__version__,
        "scikit_learn_version": sklearn.__version__,
        "model": json.dumps(writer.describe(obj, "model"), separators=(",", ":")),
    }
    metadata["checksum"] = _checksum(metadata, writer.tensors)
    return write_atomically(path, safetensors.torch.save(writer.tensors, metadata))


def _check_fitted(obj) -> None:
    if not isinstance(obj, BaseEstimator):
        raise TypeError(f"save_model saves fitted estimators, not a {type(obj)}.")
    for name, step in [("", obj)] + (obj.steps if isinstance(obj, Pipeline) else []):
        try:
            if isinstance(step, BaseEstimator):  # not "passthrough"
                check_is_fitted(step)
        except NotFittedError:
            what = f"The Pipeline step {name!r} (" if name else "This ("
            raise NotFittedError(
                f"{what}{type(step).__name__}) is not fitted yet; save_model saves "
                "fitted models only. Call fit before saving."
            ) from None


class _Writer:
    """Turns an estimator into a JSON description plus named tensors."""

    def __init__(self, class_names: dict[type, str]):
        self.class_names = class_names
        self.tensors: dict[str, torch.Tensor] = {}

    def describe(self, estimator, path: str) -> dict:
        cls = type(estimator)
        if cls not in self.class_names:
            raise TypeError(
                f"save_model cannot describe a {cls.__module__}.{cls.__qualname__}: a "
                "model file holds only this package's estimators and Pipelines. "
                f"{PICKLE_HINT}"
            )
        params, fitted = saved_state(estimator)
        where = f"of {cls.__name__}"
        return {
            "class": self.class_names[cls],
            "params": {
                k: self.encode(v, f"{path}.{k}", f"parameter {k!r} {where}")
                for k, v in params.items()
            },
            "fitted": {
                k: self.encode(v, f"{path}.{k}", f"fitted attribute {k!r} {where}")
                for k, v in fitted.items()
            },
        }

    def encode(self, value, path: str, what: str):
        """The JSON form of a value; arrays and tensors become file tensors."""
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, np.bool_):
            return bool(value)
        if isinstance(value, (Integral, Real)):
            return int(value) if isinstance(value, Integral) else float(value)
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(item, path, what) for item in value]}
        if isinstance(value, list):  # Pipeline steps are named by their names
            names = [v[0] if _is_step(v) else i for i, v in enumerate(value)]
            return [self.encode(v, f"{path}.{n}", what) for n, v in zip(names, value)]
        if isinstance(value, dict):
            if all(isinstance(key, str) and not key.startswith("__") for key in value):
                return {
                    k: self.encode(v, f"{path}.{k}", what) for k, v in value.items()
                }
            pairs = [list(pair) for pair in value.items()]
            return {"__dict__": self.encode(pairs, path, what)}
        tensor = _file_tensor(value)
        if tensor is not None:
            if path in self.tensors:
                raise ValueError(
                    f"Two tensors of the model would be named {path!r}; rename the "
                    "Pipeline steps so that no step name contains a dot."
                )
            self.tensors[path] = tensor.detach().to("cpu").contiguous()
            numpy, dtype = isinstance(value, np.ndarray), _TENSOR_DTYPES[tensor.dtype]
            spec = {"name": path, "dtype": dtype, "shape": list(tensor.shape)}
            return {"__tensor__": {**spec, "numpy": numpy}}
        if isinstance(value, np.ndarray) and value.dtype.kind in "UO":
            if value.ndim == 1 and _scalars(items := value.tolist()):
                return {"__ndarray__": {"dtype": value.dtype.str, "values": items}}
        for kind, tag in [(PurePath, "__path__"), (torch.device, "__device__")]:
            if isinstance(value, kind):
                return {tag: str(value)}
        if isinstance(value, BaseEstimator):
            return {"__estimator__": self.describe(value, path)}
        raise TypeError(
            f"save_model cannot describe a {type(value).__name__} object, the {what}: "
            "a model file holds numbers, strings, tuples, lists and dicts of them, "
            f"numeric or string arrays, and this package's estimators. {PICKLE_HINT}"
        )


def _is_step(item) -> bool:
    return isinstance(item, tuple) and len(item) > 0 and isinstance(item[0], str)


def _scalars(items) -> bool:
    return isinstance(items, list) and all(
        isinstance(item, (bool, int, float, str)) for item in items
    )


def _file_tensor(value) -> torch.Tensor | None:
    """``value`` as a tensor of a dtype a model file holds, or None."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
        native = value.astype(value.dtype.newbyteorder("="), copy=False)
        try:
            value = torch.from_numpy(np.ascontiguousarray(native))
        except TypeError:
            return None  # a dtype torch lacks, such as float128
    storable = isinstance(value, torch.Tensor) and value.dtype in _TENSOR_DTYPES
    return value if storable else None


# -- loading ---------------------------------------------------------------------


def load_model(path, *, device=None):
    """Load a model saved with :func:`save_model`, without running code from it.

    Before any weight is used, the file's container, format version and
    checksum are checked, then the classes it names (this package's estimators
    and :class:`~sklearn.pipeline.Pipeline` only), their parameters, and every
    tensor's name, shape and dtype. Nothing is unpickled. The optimizer's state
    is not saved: ``fit`` with ``warm_start=True`` continues with a fresh one.

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
        The fitted estimator, ready to predict, as it was saved.

    Raises
    ------
    ValueError
        When the file is truncated, damaged (checksum mismatch), of an
        unsupported format version, names an unknown class or architecture,
        or lacks, adds or misshapes a tensor. An example is in :func:`save_model`.
    """
    path = Path(path)
    device = None if device is None else resolve_device(device)
    try:
        with safetensors.safe_open(path, framework="pt") as file:
            metadata = _check_metadata(file.metadata(), path)
            tensors = {name: file.get_tensor(name) for name in file.keys()}
            specs = {
                n: (file.get_slice(n).get_dtype(), tuple(t.shape))
                for n, t in tensors.items()
            }
    except safetensors.SafetensorError as error:
        raise ValueError(
            f"{path} is truncated, damaged or not a safetensors file ({error}). Copy "
            "or download the file again."
        ) from None
    actual, stored = _checksum(metadata, tensors), metadata.get("checksum")
    if actual != stored:
        raise ValueError(
            f"Checksum mismatch: {path} says its contents have checksum {stored}, "
            f"but they have {actual}. The file was altered or damaged after it was "
            "saved; do not use it, get a fresh copy."
        )
    try:
        description = json.loads(metadata.get("model"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} holds no JSON model description ({error}).") from None
    reader = _Reader(_allowed_classes(), tensors, path, device)
    reader.check(description, specs)
    model = reader.build(description)
    if (saved := metadata.get("sklearn_cnn_version")) != (here := _library_version()):
        message = f"{path} was written by sklearn-cnn {saved} and is loaded by {here}"
        warnings.warn(f"{message}; check its predictions.", UserWarning, stacklevel=2)
    return model


def _check_metadata(metadata, path: Path) -> dict:
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if found != FORMAT:
        raise ValueError(
            f"{path} is not a model file written by sklearn_cnn.save_model: its "
            f"metadata should say format={FORMAT!r}, but says format={found!r}."
        )
    if (version := metadata.get("format_version")) != FORMAT_VERSION:
        raise ValueError(
            f"{path} is in model file format version {version}, but sklearn-cnn "
            f"{_library_version()} reads format version {FORMAT_VERSION} only. Load "
            f"it with sklearn-cnn {metadata.get('sklearn_cnn_version')} or newer."
        )
    return metadata


@dataclass
class _Reader:
    """Checks a description against the file, then builds its estimators."""

    classes: dict[str, type]
    tensors: dict[str, torch.Tensor]
    path: Path
    device: torch.device | None

    def error(self, message: str) -> ValueError:
        return ValueError(f"Malformed model description in {self.path}: {message}")

    def check(self, description, specs: dict[str, tuple]) -> None:
        """Allowed classes only, and exactly the tensors described, as described."""
        for nested in _tagged({"__estimator__": description}, "__estimator__"):
            name = nested.get("class") if isinstance(nested, dict) else None
            if name not in self.classes:
                raise ValueError(
                    f"{self.path} describes an object of class {name!r}, an unknown "
                    "architecture: load_model only builds these classes: "
                    f"{sorted(self.classes)}. The file may come from a newer "
                    "sklearn-cnn, or have been altered."
                )
        expected = {}
        for spec in _tagged(description, "__tensor__"):
            name = spec.get("name") if isinstance(spec, dict) else None
            if not isinstance(name, str) or not isinstance(spec.get("shape"), list):
                raise self.error(f"expected a tensor reference, got {spec!r}.")
            if name in expected:
                raise self.error(f"two objects use the tensor {name!r}.")
            expected[name] = (spec.get("dtype"), tuple(spec["shape"]))
        missing, extra = expected.keys() - specs.keys(), specs.keys() - expected.keys()
        for names, problem in [
            (missing, "lacks {} tensor(s) the model needs"),
            (extra, "holds {} tensor(s) that the model does not use"),
        ]:
            if names:
                raise ValueError(
                    f"{self.path} {problem.format(len(names))}: {_shorten(names)}. "
                    f"The model described in the file has {len(expected)} tensors, "
                    f"the file {len(specs)}: it is incomplete, was altered, or was "
                    "written for another model."
                )
        for name, needed in expected.items():
            for what, found, need in zip(("dtype", "shape"), specs[name], needed):
                if found != need:
                    raise ValueError(
                        f"Tensor {name!r} in {self.path} has {what} {found}, but the "
                        f"model described in the file needs {what} {need}."
                    )

    def build(self, description: dict) -> BaseEstimator:
        cls = self.classes[description["class"]]
        params, fitted = description.get("params"), description.get("fitted", {})
        if not isinstance(params, dict) or not isinstance(fitted, dict):
            raise self.error(f"{cls.__name__} needs params and fitted objects.")
        params = {name: self.decode(value) for name, value in params.items()}
        try:
            estimator = cls(**params)
        except TypeError as error:  # an unknown parameter
            raise self.error(f"{cls.__name__}: {error}.") from None
        # The parameters come from the file: check them as fit would.
        estimator._validate_params()
        if bad := [name for name in fitted if not FITTED_NAME.match(name)]:
            raise self.error(f"{bad[0]!r} is not a fitted attribute name.")
        state = {name: self.decode(value) for name, value in fitted.items()}
        try:
            load_saved_state(estimator, state, self.device)
        except ValueError as error:
            raise self.error(f"{cls.__name__}: {error}") from None
        return estimator

    def decode(self, value):
        """The Python value of a JSON parameter or fitted attribute."""
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(item) for item in value]
        if not any(key.startswith("__") for key in value):
            return {key: self.decode(item) for key, item in value.items()}
        (tag, content), *others = value.items()
        if others or tag not in {*_DECODERS, "__tensor__", "__estimator__"}:
            raise self.error(f"unexpected object {value!r}.")
        if tag == "__estimator__":
            return self.build(content)
        content = self.decode(content)
        try:
            if tag == "__tensor__":  # checked against the file already
                tensor = self.tensors[content["name"]]
                return tensor.numpy() if content.get("numpy") else tensor
            return _DECODERS[tag](content)
        except (TypeError, ValueError, RuntimeError) as error:
            raise self.error(f"unusable {tag} {content!r} ({error}).") from None


def _decode_array(content: dict) -> np.ndarray:
    dtype, values = np.dtype(content["dtype"]), content["values"]
    if dtype.kind not in "UO" or not _scalars(values):
        raise ValueError(f"an array of dtype {dtype} must hold strings or objects")
    return np.array(values, dtype=dtype)


# The one-key objects {tag: content} that stand for what JSON lacks, and how
# their content becomes the value again ("__tensor__" and "__estimator__" too).
_DECODERS = {"__tuple__": tuple, "__dict__": dict, "__ndarray__": _decode_array}
_DECODERS |= {"__path__": Path, "__device__": torch.device}


def _tagged(value, tag: str):
    """The contents of the one-key objects ``{tag: ...}`` in a JSON value."""
    if isinstance(value, list):
        for item in value:
            yield from _tagged(item, tag)
    elif isinstance(value, dict):
        if len(value) == 1 and tag in value:
            yield value[tag]
        for item in value.values():
            yield from _tagged(item, tag)


def _shorten(names, limit: int = 5) -> str:
    names = sorted(names)
    shown = ", ".join(repr(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
