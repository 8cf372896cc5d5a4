"""The separate environment of TensorFlow Data Validation, made on first use.

TFDV 1.16.1 needs TensorFlow 2.16, which cannot share an environment with
keras-hub (TensorFlow >= 2.20). The validator therefore ships inside the
package as files (`keras_aimv2/data/tfdv/`: `validate_data.py`, its helper
package `data_validation` and the pinned `requirements.txt`) and runs, by
file path, in a virtual environment of its own that this module creates the
first time it is needed:

    ${KERAS_AIMV2_CACHE:-${XDG_CACHE_HOME:-~/.cache}/keras-aimv2}/tfdv-<hash>

where `<hash>` is a short hash of the pins, so that changed pins get a new
environment. Creation takes about 1.5 minutes and 2.9 GB, needs Python 3.11
(TFDV has no wheels for newer versions) and is safe to interrupt or to race:
the environment is built in a temporary sibling folder, marked ready and
renamed into place only when complete, under a lock file that makes a second
process wait for the first instead of building it again.

This module imports only the standard library; `aimv2 validate` (`main`)
and `keras_aimv2.data.schema_gate` use it.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import time

TOOL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfdv")
SCRIPT = os.path.join(TOOL_DIR, "validate_data.py")
REQUIREMENTS = os.path.join(TOOL_DIR, "requirements.txt")
PYTHON_VERSION = (3, 11)
# The path of a Python 3.11 to build the environment with, if not found.
PYTHON_VARIABLE = "KERAS_AIMV2_TFDV_PYTHON"
CACHE_VARIABLE = "KERAS_AIMV2_CACHE"
# Written last into a complete environment, before it is renamed into place.
READY_MARKER = ".keras-aimv2-ready"
PARTIAL = ".partial-"
COST = "about 1.5 minutes, 2.9 GB, once"
OUTPUT_TAIL = 3000


class ValidationEnvironmentError(RuntimeError):
    """The validation environment is missing or could not be created."""


def cache_dir():
    """The folder of keras-aimv2's per-user cache.

    Returns:
        The absolute path of `$KERAS_AIMV2_CACHE` if it is set, else of
        `$XDG_CACHE_HOME/keras-aimv2`, else of `~/.cache/keras-aimv2`. It
        need not exist.
    """
    folder = os.environ.get(CACHE_VARIABLE)
    if not folder:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
            os.path.expanduser("~"), ".cache"
        )
        folder = os.path.join(base, "keras-aimv2")
    return os.path.abspath(os.path.expanduser(folder))


def requirements_hash(path=REQUIREMENTS):
    """A short hash of the pins of a requirements file.

    Comments and blank lines do not count, so that editing the explanation
    above the pins keeps the environment.

    Args:
        path: str. The requirements file; defaults to the packaged pins.

    Returns:
        The first 12 hexadecimal digits of the SHA-256 of the pin lines.
    """
    with open(path, encoding="utf-8") as file:
        pins = [line.strip() for line in file]
    pins = [line for line in pins if line and not line.startswith("#")]
    return hashlib.sha256("\n".join(pins).encode("utf-8")).hexdigest()[:12]


def environment_dir():
    """The folder of the validation environment of the packaged pins.

    Returns:
        `<cache_dir()>/tfdv-<requirements_hash()>`; it may not exist yet.
    """
    return os.path.join(cache_dir(), f"tfdv-{requirements_hash()}")


def _python_of(directory):
    return os.path.join(directory, "bin", "python")


def is_ready(directory):
    """Whether a folder holds a complete validation environment.

    Args:
        directory: str. An environment folder, e.g. `environment_dir()`.

    Returns:
        `True` when its ready marker and its Python exist.
    """
    return os.path.isfile(
        os.path.join(directory, READY_MARKER)
    ) and os.path.isfile(_python_of(directory))


def _stderr(message):
    print(message, file=sys.stderr, flush=True)


def environment_python(create=True, log=_stderr):
    """The Python of the validation environment, created if need be.

    Args:
        create: bool. Create the environment when it is missing (about 1.5
            minutes and 2.9 GB, once); `False` raises instead.
        log: callable taking a str. Receives the progress messages of a
            creation; defaults to printing them to stderr.

    Returns:
        The path of the environment's `bin/python`.

    Raises:
        ValidationEnvironmentError: when the environment is missing and
            `create` is `False`, when no Python 3.11 is found, or when its
            creation fails (with the tail of the failing command's output).
    """
    directory = environment_dir()
    if is_ready(directory):
        return _python_of(directory)
    if not create:
        raise ValidationEnvironmentError(
            f"The validation environment {directory} has not been created: "
            f"run `aimv2 validate --setup` ({COST})."
        )
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    with _locked(directory + ".lock", directory, log):
        # Another process may have created it while this one waited.
        if not is_ready(directory):
            _create(directory, log)
    return _python_of(directory)


@contextlib.contextmanager
def _locked(path, directory, log):
    """Hold an exclusive lock on `path`; the system drops it if we die."""
    import fcntl  # POSIX only, as the environment's `bin/python` is.

    with open(path, "a") as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(
                f"waiting for another process to finish creating the "
                f"validation environment in {directory}"
            )
            fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def _create(directory, log):
    """Build the environment beside `directory`, then rename it into place.

    Runs under the lock, so that leftovers of killed creations (partial
    folders, or a folder without the ready marker) are removed safely.
    """
    python = find_python()
    parent, name = os.path.split(directory)
    for entry in sorted(os.listdir(parent)):
        if entry.startswith(name + PARTIAL) or entry == name:
            log(f"removing an incomplete validation environment: {entry}")
            # The final folder must go, or the rename below fails.
            shutil.rmtree(
                os.path.join(parent, entry), ignore_errors=entry != name
            )
    log(f"creating the validation environment in {directory} ({COST})")
    start = time.monotonic()
    partial = f"{directory}{PARTIAL}{os.getpid()}"
    partial_python = _python_of(partial)
    steps = (
        (
            f"making a virtual environment with {python}",
            [python, "-m", "venv", partial],
        ),
        (
            "upgrading pip",
            [partial_python, "-m", "pip", "install", "-q", "--upgrade", "pip"],
        ),
        (
            "installing TensorFlow Data Validation 1.16.1 and its pinned "
            f"packages from {REQUIREMENTS}",
            # pyarrow 10 must come as a wheel; building it from source fails.
            [
                partial_python,
                "-m",
                "pip",
                "install",
                "-q",
                "--only-binary=pyarrow",
                "-r",
                REQUIREMENTS,
            ],
        ),
    )
    try:
        for message, command in steps:
            log(f"  {message}")
            _run_step(command)
        _relocate(partial, directory)
        # Keep the environment out of git if the cache is in a checkout.
        with open(os.path.join(partial, ".gitignore"), "w") as file:
            file.write("*\n")
        with open(os.path.join(partial, READY_MARKER), "w") as file:
            file.write(f"requirements {requirements_hash()}\n")
        os.rename(partial, directory)
    except BaseException:
        # Failed or interrupted (Ctrl-C): nothing half-made stays behind.
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log(
        f"validation environment ready in {time.monotonic() - start:.0f} s: "
        f"{directory}"
    )
    others = [
        entry
        for entry in sorted(os.listdir(parent))
        if entry.startswith("tfdv-")
        and entry != name
        and is_ready(os.path.join(parent, entry))
    ]
    if others:
        log(
            f"older validation environments in {parent}, for other pins, "
            f"can be deleted: {', '.join(others)}"
        )


def _run_step(command):
    """Run one command of a creation; raise with its output if it fails."""
    try:
        result = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
    except OSError as error:
        raise ValidationEnvironmentError(
            f"Creating the validation environment failed: cannot run "
            f"{command[0]!r}: {error}"
        ) from None
    if result.returncode != 0:
        tail = result.stdout[-OUTPUT_TAIL:].rstrip()
        raise ValidationEnvironmentError(
            "Creating the validation environment failed: `"
            + " ".join(command)
            + f"` exited with status {result.returncode}. The end of its "
            f"output:\n{tail}"
        )


def _relocate(partial, directory):
    """Point the scripts of `partial`'s `bin/` at the final folder.

    pip writes the absolute path of the environment's Python into the
    first line of the scripts it installs (and venv into `activate`).
    """
    old, new = os.fsencode(partial), os.fsencode(directory)
    paths = [os.path.join(partial, "pyvenv.cfg")]
    bin_dir = os.path.join(partial, "bin")
    paths += [os.path.join(bin_dir, entry) for entry in os.listdir(bin_dir)]
    for path in paths:
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        if os.path.getsize(path) > 1 << 20:
            continue
        with open(path, "rb") as file:
            content = file.read()
        if old in content and b"\0" not in content:
            with open(path, "wb") as file:
                file.write(content.replace(old, new))


def _interpreter_version(python):
    """`(major, minor)` of an interpreter, or `None` if it does not run."""
    try:
        result = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        major, minor = result.stdout.split()
        return int(major), int(minor)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None


def find_python():
    """A Python 3.11 interpreter to build the validation environment with.

    Tries `$KERAS_AIMV2_TFDV_PYTHON` if it is set (and only it), else this
    Python, then `python3.11` and `python3` on the `PATH`.

    Returns:
        The path of the interpreter.

    Raises:
        ValidationEnvironmentError: naming what to install, when none is
            Python 3.11.
    """
    wanted = ".".join(map(str, PYTHON_VERSION))
    override = os.environ.get(PYTHON_VARIABLE)
    if override:
        version = _interpreter_version(override)
        if version != PYTHON_VERSION:
            found = "does not run" if version is None else "is Python %d.%d"
            if version is not None:
                found %= version
            raise ValidationEnvironmentError(
                f"{PYTHON_VARIABLE} must be the path of a Python {wanted} "
                f"interpreter. Received: {override!r}, which {found}."
            )
        return override
    candidates = [sys.executable]
    candidates += [
        path
        for path in map(shutil.which, (f"python{wanted}", "python3"))
        if path
    ]
    for candidate in candidates:
        if _interpreter_version(candidate) == PYTHON_VERSION:
            return candidate
    raise ValidationEnvironmentError(
        f"The validation environment needs Python {wanted} (TensorFlow Data "
        f"Validation 1.16.1 has no wheels for newer versions), and none of "
        f"this Python and python{wanted} and python3 on the PATH is: found "
        f"{', '.join(candidates)}. Install it with its venv module, e.g. "
        f"`apt-get install python{wanted} python{wanted}-venv`, `pyenv "
        f"install {wanted}` or `uv python install {wanted}`, or set "
        f"{PYTHON_VARIABLE} to the path of a Python {wanted}."
    )


def validator_command(arguments, python, prog=None):
    """The command line that runs the validator in an environment.

    Args:
        arguments: list of str. The validator's arguments.
        python: str. The interpreter, e.g. `environment_python()`.
        prog: str or `None`. The name of the command in the validator's
            usage and error messages; `None` keeps `validate_data.py`.

    Returns:
        A list of str for `subprocess.run`.
    """
    command = [python, SCRIPT]
    if prog:
        command += ["--prog", prog]
    return command + [os.fspath(argument) for argument in arguments]


def main(argv=None, prog="aimv2 validate"):
    """Run `aimv2 validate`: the validator, in its environment.

    `--setup` alone creates the environment if need be and prints its
    Python. `-h`/`--help` prints the validator's usage without the
    environment (the validator reads its arguments with the standard
    library only) and exits, as argparse does. Anything else goes to the
    validator, run in the environment, which is created first if it is
    missing.

    Args:
        argv: list of str or `None`. The arguments; `None` reads
            `sys.argv`.
        prog: str. The name of the command in usage and error messages.

    Returns:
        The validator's exit status (0 no anomalies, 1 anomalies, 2 bad
        arguments, 3 failure), 3 when the environment cannot be created,
        or 130 when interrupted.

    Raises:
        SystemExit: with status 0 after printing the usage for `--help`.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        _print_usage(prog)
    if "--setup" in argv and argv != ["--setup"]:
        print(
            f"{prog}: error: --setup takes no other arguments. Received: "
            f"{' '.join(argv)}",
            file=sys.stderr,
        )
        return 2
    try:
        python = environment_python()
    except ValidationEnvironmentError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 3
    if argv == ["--setup"]:
        print(python)
        return 0
    sys.stdout.flush()
    try:
        command = validator_command(argv, python, prog)
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 130


def _print_usage(prog):
    """Print the validator's usage and `--setup`'s, then exit."""
    result = subprocess.run(
        validator_command(["--help"], sys.executable, prog),
        capture_output=True,
        text=True,
        check=False,
    )
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        raise SystemExit(result.returncode)
    sys.stdout.write(result.stdout)
    print(
        f"\nThe validator runs in its own environment, created first if it "
        f"is missing ({COST}):\n  {environment_dir()}\n`{prog} --setup` "
        "(alone) only creates it and prints its Python."
    )
    raise SystemExit(0)
