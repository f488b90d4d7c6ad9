"""Devices, numeric precision and seeds: runtime choices made in one place."""

from __future__ import annotations

import contextlib
import functools
import inspect
import multiprocessing
import secrets
import sys
import threading
import warnings
from collections.abc import Iterator

import numpy as np
import torch
from torch.overrides import TorchFunctionMode


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> the current CUDA device when there is one, else the CPU.

    'cuda' without an index means the current device, so a Dask or joblib
    worker restricted with ``CUDA_VISIBLE_DEVICES`` uses only the GPU it was given.
    """
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} was requested but CUDA is not available on this "
            "machine. Use device='auto' or device='cpu'."
        )
    return resolved


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True when the CPU executes bfloat16 matrix work natively (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = cpuinfo.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; None for plain float32."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    # 'auto': bfloat16 where the hardware runs it natively, float32 elsewhere.
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def resolve_verbose(verbose) -> int:
    """The verbosity of one fit: ``verbose``, or for 'auto' 1 where someone watches.

    'auto' (as in Keras) means an epoch table and progress bars when the output
    is a terminal or a Jupyter notebook, and nothing when it is redirected to a
    file or a pipe, or when the fit runs in a worker (joblib's and Dask's
    processes, any thread but the main one), whose output nobody reads as it
    comes and whose bars and tables would interleave.
    """
    if isinstance(verbose, str) and verbose == "auto":
        return int(output_is_watched())
    return int(verbose)


def output_is_watched() -> bool:
    """True in the main process's main thread, writing to a terminal or a notebook."""
    if in_worker():
        return False
    if _in_jupyter_kernel():
        return True
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # no stdout (pythonw), or a closed one
        return False


def in_worker() -> bool:
    """True in a worker process (joblib's loky, Dask's) or a thread but the main one."""
    return (
        multiprocessing.current_process().name != "MainProcess"
        or threading.current_thread() is not threading.main_thread()
    )


def _in_jupyter_kernel() -> bool:
    """True inside a Jupyter (or Colab) kernel, whose stdout is no terminal."""
    if "IPython" not in sys.modules:
        return False
    shell = sys.modules["IPython"].get_ipython()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def retry_in_float32(precision: str, device: torch.device, error: Exception) -> bool:
    """Whether a fit that diverged under ``precision`` is refitted in float32.

    Under bfloat16 autocast only the convolutions and matrix products are
    listed to run in bfloat16, but every operation that follows them takes
    their bfloat16 output as it is: batch norm (forward and backward), ReLU,
    the residual additions, pooling and every activation gradient then carry 8
    bits of mantissa. A fit can diverge there that converges in float32 (see
    :ref:`precision`). 'auto' chose bfloat16 for speed, not the user: the fit
    is then started again in float32, with a warning; an explicit 'bfloat16'
    raises the error.
    """
    if precision != "auto" or resolve_precision(precision, device) is None:
        return False
    warnings.warn(
        f"{error} Under precision='auto' this fit ran in bfloat16 autocast on "
        f"{device.type}; it is started again in float32 (precision='float32'), "
        "which takes longer but does not lose the low bits of batch norm and "
        "the gradients. Pass precision='float32' to skip the bfloat16 attempt.",
        RuntimeWarning,
        stacklevel=4,
    )
    return True


def resolve_seed(random_state) -> int:
    """An integer seed from ``random_state`` without touching global random state.

    ``None`` draws fresh entropy from the operating system rather than from
    NumPy's global generator, so that fitting never changes the caller's
    ``np.random`` state.
    """
    if random_state is None:
        return secrets.randbits(63)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    return int(random_state)


def derive_seeds(seed: int, n_seeds: int) -> list[int]:
    """Independent child seeds for the separate random streams of one fit."""
    children = np.random.SeedSequence(seed).spawn(n_seeds)
    return [int(child.generate_state(1, dtype=np.uint64)[0] >> 1) for child in children]


# Random operations that take a ``generator`` argument, by name: the in-place
# samplers (whose names nn.init's functions share, with the same argument) and
# the factory functions. Names, because a method reaches a torch function mode
# as the C implementation's descriptor, not as ``torch.Tensor.uniform_``.
_TENSOR_SAMPLERS = (
    "bernoulli_",
    "cauchy_",
    "exponential_",
    "geometric_",
    "log_normal_",
    "normal_",
    "random_",
    "uniform_",
)
_TORCH_SAMPLERS = (
    "bernoulli",
    "multinomial",
    "normal",
    "poisson",
    "rand",
    "rand_like",
    "randint",
    "randint_like",
    "randn",
    "randn_like",
    "randperm",
)
# A mode sees only the outermost torch function of a call: nn.init's
# initializers (kaiming_uniform_ and the others) get the generator themselves.
_INITIALIZERS = tuple(
    name
    for name, function in vars(torch.nn.init).items()
    if inspect.isfunction(function)
    and not name.startswith("_")
    and "generator" in inspect.signature(function).parameters
)
_SAMPLERS = frozenset(_TENSOR_SAMPLERS + _TORCH_SAMPLERS + _INITIALIZERS)
_DROPOUTS = {"dropout": False, "dropout1d": True, "dropout2d": True, "dropout3d": True}


class _SeededRandomOps(TorchFunctionMode):
    """Give every random torch operation in this thread a generator of our own.

    ``torch.manual_seed`` seeds the one generator the whole process shares, so
    two fits in two threads (Dask's workers, a thread pool) would draw from each
    other's streams, and a fit would shift the caller's own ``torch.rand`` draws.
    A torch function mode is local to the thread that enters it: inside it, the
    samplers that weight initialization and dropout call get a seeded generator
    on the tensor's device, and the process-wide generator is never touched.
    """

    def __init__(self, seed: int):
        super().__init__()
        self.seed = seed
        self.generators: dict[torch.device, torch.Generator] = {}

    def generator(self, device) -> torch.Generator:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self.generators:
            self.generators[device] = torch.Generator(device).manual_seed(self.seed)
        return self.generators[device]

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", None)
        if name in _SAMPLERS and kwargs.get("generator") is None:
            kwargs["generator"] = self.generator(_device_of(args, kwargs))
        elif name in _DROPOUTS:
            return self.dropout(*args, channelwise=_DROPOUTS[name], **kwargs)
        return func(*args, **kwargs)

    def dropout(self, input, p=0.5, training=True, inplace=False, *, channelwise):
        """Inverted dropout with our generator (torch's own has no generator)."""
        if not training or p == 0:
            return input
        if p == 1:
            return input.mul_(0) if inplace else input * 0
        shape = input.shape
        if channelwise:
            # One draw per (sample, channel), shared by all the pixels of a map.
            shape = input.shape[:2] + (1,) * (input.dim() - 2)
        keep = torch.empty(shape, dtype=input.dtype, device=input.device)
        keep.bernoulli_(1 - p, generator=self.generator(input.device))
        keep.div_(1 - p)
        return input.mul_(keep) if inplace else input * keep


def _device_of(args, kwargs) -> torch.device:
    """The device a sampler works on: its tensor's, or the factory's ``device``."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value.device
    device = kwargs.get("device")
    return torch.device(device) if device is not None else torch.get_default_device()


@contextlib.contextmanager
def seeded_random_ops(seed: int) -> Iterator[None]:
    """Seed every random torch operation of this thread, and only of this thread."""
    with _SeededRandomOps(seed):
        yield


def seeded_training_ops(module: torch.nn.Module, seed: int):
    """:func:`seeded_random_ops` for training, for networks that draw while training.

    Only dropout (and torchvision's stochastic depth) draws in a forward pass;
    our own shuffling and augmentation use explicit generators. The mode costs
    every torch call a Python dispatch (15 to 20 % of a 32 px epoch of the
    default network), so it is entered only when a layer of ``module`` draws.
    A layer that draws by other means runs on the process-wide generator.
    """
    from torchvision.ops import StochasticDepth

    drawing = (
        torch.nn.Dropout,
        torch.nn.Dropout1d,
        torch.nn.Dropout2d,
        torch.nn.Dropout3d,
        torch.nn.AlphaDropout,
        torch.nn.FeatureAlphaDropout,
        StochasticDepth,
    )
    if any(isinstance(layer, drawing) for layer in module.modules()):
        return seeded_random_ops(seed)
    return contextlib.nullcontext()
