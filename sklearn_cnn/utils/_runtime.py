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
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

# Decoding is I/O and C code that releases the GIL; a few threads are enough,
# and more rarely help a training step that wants the cores.
_MAX_THREADS = 8


def thread_count(n_jobs: int | None = None) -> int:
    """Threads for decoding and listing images: the package's one rule.

    ``n_jobs`` as joblib reads it (None: one per CPU this process may use,
    within any ``joblib.parallel_config``), at most 8.
    """
    from joblib import effective_n_jobs

    if n_jobs is not None:
        return max(1, effective_n_jobs(n_jobs))
    return max(1, min(_MAX_THREADS, effective_n_jobs(-1)))


def map_in_threads(
    function: Callable, items: Iterable, *, n_threads: int | None = None
) -> list:
    """``[function(item) for item in items]``, in threads when there are many.

    Results come in the order of ``items``; the first exception is raised.
    """
    items = list(items)
    n_threads = thread_count() if n_threads is None else n_threads
    if n_threads == 1 or len(items) < 2:
        return [function(item) for item in items]
    chunk = max(1, -(-len(items) // (4 * n_threads)))
    chunks = [items[start : start + chunk] for start in range(0, len(items), chunk)]
    with ThreadPoolExecutor(
        max_workers=n_threads, thread_name_prefix="sklearn_cnn"
    ) as executor:
        # One task per chunk: a future per item costs more than small work.
        done = executor.map(lambda part: [function(item) for item in part], chunks)
        return [result for part in done for result in part]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The package's one autocast: ``dtype`` on ``device``, or nothing for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


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
_ALPHA_DROPOUTS = {"alpha_dropout": False, "feature_alpha_dropout": True}
# SELU's negative saturation, -scale * alpha: what alpha dropout sets dropped units to.
_SELU_SATURATION = -1.7580993408473766


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
        # Whether any random operation was given a generator since entering.
        self.drew = False

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
            self.drew = True
            kwargs["generator"] = self.generator(_device_of(args, kwargs))
        elif name in _DROPOUTS:
            return self.dropout(*args, channelwise=_DROPOUTS[name], **kwargs)
        elif name in _ALPHA_DROPOUTS:
            return self.alpha_dropout(
                *args, channelwise=_ALPHA_DROPOUTS[name], **kwargs
            )
        return func(*args, **kwargs)

    def _keep_mask(self, input, p, channelwise):
        shape = input.shape
        if channelwise:
            # One draw per (sample, channel), shared by all the pixels of a map.
            shape = input.shape[:2] + (1,) * (input.dim() - 2)
        keep = torch.empty(shape, dtype=input.dtype, device=input.device)
        self.drew = True
        return keep.bernoulli_(1 - p, generator=self.generator(input.device))

    def alpha_dropout(
        self, input, p=0.5, training=False, inplace=False, *, channelwise
    ):
        """Alpha dropout (SELU networks) with our generator, as torch computes it."""
        if not training or p == 0:
            return input
        if p == 1:
            return input.mul_(0) if inplace else input * 0
        keep = self._keep_mask(input, p, channelwise)
        scale = ((1 - p) * (1 + p * _SELU_SATURATION**2)) ** -0.5
        shift = -scale * _SELU_SATURATION * p
        output = (input * keep + _SELU_SATURATION * (1 - keep)) * scale + shift
        return input.copy_(output) if inplace else output

    def dropout(self, input, p=0.5, training=True, inplace=False, *, channelwise):
        """Inverted dropout with our generator (torch's own has no generator)."""
        if not training or p == 0:
            return input
        if p == 1:
            return input.mul_(0) if inplace else input * 0
        keep = self._keep_mask(input, p, channelwise)
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


class TrainingRandomness:
    """Seeded random operations for the forward passes of training, when they draw.

    Dropout, stochastic depth (torchvision's, timm's ``DropPath``), a module's
    own ``F.dropout`` or ``torch.rand``: whatever draws gets a generator of this
    fit, never the process-wide one. The mode costs every torch call a Python
    dispatch (15 to 20 % of a 32 px epoch of the default network), so the first
    training step runs inside it and notes whether anything drew; only then do
    the later steps run inside it too.
    """

    def __init__(self, seed: int):
        self.mode: _SeededRandomOps | None = _SeededRandomOps(seed)

    def step(self):
        """A context for one training step."""
        if self.mode is None:
            return contextlib.nullcontext()
        return _ObservedStep(self)


class _ObservedStep:
    def __init__(self, randomness: TrainingRandomness):
        self.randomness = randomness

    def __enter__(self):
        self.randomness.mode.__enter__()

    def __exit__(self, *exc_info):
        mode = self.randomness.mode
        mode.__exit__(*exc_info)
        if exc_info[0] is None and not mode.drew:
            # Nothing random in a training step: the later ones skip the mode.
            self.randomness.mode = None
        return False
