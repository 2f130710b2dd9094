"""The command-line contract every script of the project follows (experiments/*, export/*).

Exit status:

* 0: success.
* 2: bad input. One line on stderr, ``error: <problem and fix>``, no traceback. Bad input is
  exactly `BAD_INPUT`: `UsageError` (and any other `ValueError`, which is how the library
  reports a bad setting, spec, label or data file, e.g. an unknown attention spec, a label
  outside the class range, or non-UTF-8 text, `UnicodeDecodeError` being a `ValueError`), a
  missing or unreadable path (`FileNotFoundError`, `NotADirectoryError`, `IsADirectoryError`,
  `PermissionError`), and a flag absl refuses while parsing (an unknown flag, a bad value, a
  missing required flag).
* 1: an internal error: anything else, reported with its traceback.

Scripts validate their flags, specs and paths before they write anything or read any data, so
exit status 2 means nothing was written.

TensorFlow prints C++ start-up lines on stderr (``failed call to cuInit`` on a machine without
a GPU, CPU-feature and oneDNN notices) that look like errors but are not. Unless ``--verbose`` is
on the command line, `quiet_tensorflow` sets ``TF_CPP_MIN_LOG_LEVEL=3`` (a value the user
exported is kept) and drops the few lines TensorFlow 2.21 writes while it loads regardless of
that variable (``Could not find cuda drivers``, written through absl's C++ logging before it is
initialised); every other line of stderr is passed on. `run_absl` also keeps absl's Python
logging at WARNING unless ``--verbose``. With ``--verbose``, a bad-input error also prints its
traceback.

This module imports only the standard library (absl lazily, in `run_absl`), so the
TensorFlow-free predictor uses it too, and importing it has no side effect.

Example:
    ```python
    if __name__ == "__main__":
        cli.run_absl(main)        # absl scripts: parses flags, then calls main(argv)
    # argparse scripts:
    def main(argv=None):
        return cli.guard(_main, argv)
    ```
"""

import argparse
import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
import traceback

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT = 0, 1, 2
VERBOSE_FLAG = "verbose"
# Start-up lines TensorFlow writes while it is imported, whatever TF_CPP_MIN_LOG_LEVEL says.
TENSORFLOW_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "cudart_stub.cc",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "oneDNN custom operations are on",
    "Unable to register cu",
)


class UsageError(ValueError):
    """Bad command-line input: the message names the problem and the fix."""


BAD_INPUT = (
    ValueError,  # includes UsageError and UnicodeDecodeError
    FileNotFoundError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


def describe(error):
    """`error` as one line that names the problem and, where the error does not, the fix."""
    if isinstance(error, UnicodeDecodeError):
        text = (
            f"the input is not UTF-8 text ({error.encoding} cannot decode byte "
            f"{error.object[error.start:error.start + 1]!r} at position {error.start}: "
            f"{error.reason}); convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8`)"
        )
    elif isinstance(error, OSError) and error.filename is not None and error.strerror:
        fix = {
            FileNotFoundError: "check the path",
            NotADirectoryError: "pass a folder",
            IsADirectoryError: "pass a file, not a folder",
            PermissionError: "make it readable (or writable) for this user",
        }.get(type(error), "check the path")
        text = f"{error.strerror}: {os.fsdecode(error.filename)!r}; {fix}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def is_verbose(argv=None):
    """Whether ``--verbose`` (or ``--verbose=true``/``1``) is on the command line `argv`."""
    verbose = False
    for arg in sys.argv[1:] if argv is None else argv:
        if arg == "--":
            break
        if arg in ("--verbose", "-verbose"):
            verbose = True
        elif arg in ("--noverbose", "-noverbose"):
            verbose = False
        elif arg.startswith(("--verbose=", "-verbose=")):
            verbose = arg.split("=", 1)[1].lower() in ("1", "true", "t", "yes", "y")
    return verbose


def quiet_tensorflow(argv=None):
    """Hides TensorFlow's C++ log lines unless `argv` has ``--verbose``; call before TF loads.

    Sets ``TF_CPP_MIN_LOG_LEVEL=3`` only when the variable is not set already (the user's own
    choice wins; TensorFlow reads it when it is imported), and, when TensorFlow is not imported
    yet, makes its import drop the `TENSORFLOW_NOISE` lines from stderr. Meant for a script's
    entry path only: the library never calls it.
    """
    if is_verbose(argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and not any(
        isinstance(finder, _QuietImport) for finder in sys.meta_path
    ):
        sys.meta_path.insert(0, _QuietImport("tensorflow"))


@contextlib.contextmanager
def filtered_stderr(noise=TENSORFLOW_NOISE):
    """Within the block, file descriptor 2 goes to a buffer; lines holding `noise` are dropped
    and the rest are written to stderr when the block ends (C++ code writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            text = buffer.read().decode("utf-8", errors="replace")
            kept = [line for line in text.splitlines(True) if not any(n in line for n in noise)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _QuietImport(importlib.abc.MetaPathFinder):
    """Imports the top-level package `name` once inside `filtered_stderr`, then steps aside."""

    def __init__(self, name):
        self.name = name

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        with filtered_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


def report_bad_input(error, verbose=False, stream=None):
    """Prints ``error: <one line>`` (and, when `verbose`, the traceback first) to `stream`."""
    stream = sys.stderr if stream is None else stream
    if verbose:
        traceback.print_exception(error, file=stream)
    print(f"error: {describe(error)}", file=stream)
    return EXIT_BAD_INPUT


def guard(main, argv=None, verbose=None):
    """Calls ``main(argv)`` under the exit-status contract; returns 0, 1 or 2.

    `BAD_INPUT` errors print one line and give 2; any other exception prints its traceback and
    gives 1; `SystemExit` and `KeyboardInterrupt` pass through. `main` returning None means 0.
    """
    verbose = is_verbose(argv) if verbose is None else verbose
    try:
        status = main(argv)
    except BAD_INPUT as error:
        return report_bad_input(error, verbose)
    except Exception:  # noqa: BLE001 - the contract: any other error is internal
        traceback.print_exc()
        return EXIT_INTERNAL
    return EXIT_OK if status is None else int(status)


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose usage errors raise `UsageError` (one line, exit 2)."""

    def error(self, message):
        raise UsageError(f"{message}; see `{self.prog} --help`")


def run_absl(main, argv=None):
    """Runs an absl ``main(argv)`` under the contract, with a ``--verbose`` flag; never returns.

    Flag-parsing errors (an unknown flag, a bad value, a missing required flag, a failed
    validator) exit 2 with one line instead of absl's usage dump and exit 1.
    """
    argv = sys.argv if argv is None else argv
    quiet_tensorflow(argv[1:])
    from absl import app, flags, logging

    if VERBOSE_FLAG not in flags.FLAGS:
        flags.DEFINE_boolean(
            VERBOSE_FLAG, False,
            "Show TensorFlow's C++ log lines, INFO logs and the traceback of input errors.",
            module_name=argv[0],  # listed by --helpshort with the script's own flags
        )

    def parse(args):
        try:
            return flags.FLAGS(args)
        except flags.Error as error:
            message = describe(error)
            sys.stderr.write(f"error: {message}; see `{os.path.basename(args[0])} --helpshort`\n")
            sys.exit(EXIT_BAD_INPUT)

    def wrapped(args):
        verbose = flags.FLAGS[VERBOSE_FLAG].value
        logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
        return guard(main, args, verbose=verbose)

    app.run(wrapped, argv=argv, flags_parser=parse)
