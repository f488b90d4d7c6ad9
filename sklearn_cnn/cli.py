"""The ``sklearn-cnn`` command: train, predict, evaluate and export image classifiers.

A thin layer over the public API: data from :mod:`sklearn_cnn.datasets`, a
Pipeline of :class:`~sklearn_cnn.preprocessing.ImageScaler`,
:class:`~sklearn_cnn.augmentation.RandomAugment` and
:class:`~sklearn_cnn.CNNImageClassifier` for the embedded data, the classifier
alone, reading image files batch by batch, for a folder; traces and plots from
:mod:`sklearn_cnn.inspection`. Each sub-command lives in a module of its own in
``sklearn_cnn/_cli/``. Nothing in the package imports this module.

Only the standard library is imported until a sub-command runs, so that
``sklearn-cnn --help`` answers at once.

Run ``sklearn-cnn --help`` (or ``python -m sklearn_cnn --help``) for the usage.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence

from ._cli import evaluate, export, predict, train
from ._cli.common import PROGRAM, CommandInterrupted, one_line, short_warnings
from ._cli.parsing import CommandParser

# Before anything heavy is imported: the start of the "Wall time" of the whole
# run where the process's own start time is unknown.
_IMPORTED_AT = time.perf_counter()
SUB_COMMANDS = (train, predict, evaluate, export)


def build_parser() -> CommandParser:
    """The argument parser of the ``sklearn-cnn`` command."""
    from sklearn_cnn import __version__

    parser = CommandParser(
        prog=PROGRAM,
        description=(
            "Train, apply and evaluate convolutional image classifiers. With no data "
            "folder, 'train' learns to tell cats from dogs on the embedded data set."
        ),
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of errors instead of a one-line message",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUB_COMMANDS:
        command.add_parser(commands)
    return parser


def _seconds_since_process_start() -> float | None:
    """How long this process has run, from ``/proc`` (Linux); None elsewhere."""
    try:
        with open("/proc/self/stat") as file:
            # The fields after the command name, which is in parentheses; the
            # 22nd field of the line, the start time, in clock ticks since boot.
            fields = file.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        elapsed = time.clock_gettime(time.CLOCK_BOOTTIME) - started
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    # The process started before this module was imported, or the clocks disagree.
    return elapsed if elapsed >= time.perf_counter() - _IMPORTED_AT else None


def _run_started(argv: Sequence[str] | None) -> float:
    """The ``perf_counter`` time the run started: the process's start for the
    command itself (imports included), the call for ``main([...])`` in a program.
    """
    if argv is not None:
        return time.perf_counter()
    elapsed = _seconds_since_process_start()
    return _IMPORTED_AT if elapsed is None else time.perf_counter() - elapsed


@contextlib.contextmanager
def _ctrl_c_ends_the_command():
    """Ctrl-C raises CommandInterrupted; a second one is ignored while cleaning up.

    Every step of the command, imports included, then stops at once and the
    ``finally`` blocks that remove half-written files run. No library can take
    it for a request to carry on, as skorch's ``NeuralNet.partial_fit`` takes a
    KeyboardInterrupt (it ends training early and returns the model).
    """

    def interrupt(signum, frame):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise CommandInterrupted

    try:
        previous = signal.signal(signal.SIGINT, interrupt)
    except ValueError:  # not the main thread: Ctrl-C stays KeyboardInterrupt
        yield
        return
    try:
        yield
    finally:
        # None: the handler was not set from Python; the default is the closest.
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``sklearn-cnn`` command; return its exit status.

    Parameters
    ----------
    argv : sequence of str, default=None
        The arguments, without the program name; None reads ``sys.argv``.

    Returns
    -------
    status : int
        0 on success, 1 on an error (reported on one line of stderr), 2 on a
        usage error, 130 when interrupted (Ctrl-C).
    """
    started = _run_started(argv)
    debug = False
    try:
        with _ctrl_c_ends_the_command():
            args = build_parser().parse_args(argv)
            debug = args.debug
            with short_warnings():
                return args.run(args, started)
    except (CommandInterrupted, KeyboardInterrupt):
        if sys.stderr.isatty():
            print(file=sys.stderr)  # off the line of a progress bar
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(f"{PROGRAM}: error: {one_line(error)}", file=sys.stderr)
        return 1
