"""The TFDV environment: where it lives, how it is made, `aimv2 validate`.

A stand-in for Python 3.11 (a shell script) makes fake environments in a
second, so that creation, its failure, an interruption and a race are
tested without downloading anything. The real environment is made once by
tools/test.sh, for tests/tfdv and tests/test_schema_gate.py.
"""

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from keras_aimv2.cli import main as cli_main
from keras_aimv2.data import validation_env

# Answers the version probe with $FAKE_VERSION; `-m venv DIR` copies itself
# to DIR/bin/python; `-m pip install -r ...` writes a script whose first
# line names the environment's Python, or fails ($FAKE_PIP=fail), or hangs
# ($FAKE_PIP=hang, after touching $FAKE_STARTED), or sends Ctrl-C to the
# process that runs it ($FAKE_PIP=interrupt). Every call is logged.
FAKE_PYTHON = r"""#!/bin/sh
echo "$*" >> "$FAKE_LOG"
case "$1" in
-c) echo "${FAKE_VERSION:-3 11}"; exit 0 ;;
esac
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin"
    cp "$0" "$3/bin/python"
    printf 'home = /fake\ncommand = python -m venv %s\n' "$3" > "$3/pyvenv.cfg"
    exit 0
fi
case "$*" in
*" -r "*)
    case "$FAKE_PIP" in
    fail) echo "ERROR: No matching distribution found for tensorflow"; exit 1 ;;
    hang) touch "$FAKE_STARTED"; sleep 60 ;;
    interrupt) kill -INT "$PPID"; sleep 5 ;;
    esac
    sleep "${FAKE_SLOW:-0}"
    printf '#!%s/python\n' "$(dirname "$0")" > "$(dirname "$0")/tool"
    chmod +x "$(dirname "$0")/tool"
    exit 0 ;;
esac
exit 0
"""
# Creates the environment in a child process, the module loaded by path.
CHILD = """
import importlib.util, signal, sys
# Interrupted as from a terminal, also when started from a shell's
# background job (which ignores SIGINT).
signal.signal(signal.SIGINT, signal.default_int_handler)
spec = importlib.util.spec_from_file_location("validation_env", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
print(module.environment_python())
"""


def write_fake_python(path, version="3 11"):
    with open(path, "w") as file:
        file.write(FAKE_PYTHON.replace("${FAKE_VERSION:-3 11}", version))
    os.chmod(path, os.stat(path).st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A cache folder and a fake Python 3.11 to build environments with."""
    cache = tmp_path / "cache"
    log = tmp_path / "calls.log"
    log.touch()
    python = write_fake_python(tmp_path / "python3.11")
    monkeypatch.setenv("KERAS_AIMV2_CACHE", str(cache))
    monkeypatch.setenv("KERAS_AIMV2_TFDV_PYTHON", python)
    monkeypatch.setenv("FAKE_LOG", str(log))
    for name in ("FAKE_PIP", "FAKE_SLOW", "FAKE_STARTED"):
        monkeypatch.delenv(name, raising=False)
    return {"cache": cache, "log": log, "tmp": tmp_path}


def venv_calls(log):
    return [line for line in log.read_text().splitlines() if "-m venv" in line]


def leftovers(cache):
    return [entry for entry in os.listdir(cache) if ".partial-" in entry]


def child(**extra_environment):
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, validation_env.__file__],
        env={**os.environ, **extra_environment},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


# Where the environment lives.


def test_environment_path_follows_the_cache_variable(tmp_path, monkeypatch):
    digest = validation_env.requirements_hash()
    assert len(digest) == 12 and int(digest, 16) >= 0
    monkeypatch.setenv("KERAS_AIMV2_CACHE", str(tmp_path / "c"))
    assert validation_env.environment_dir() == str(
        tmp_path / "c" / f"tfdv-{digest}"
    )
    # A relative folder is taken from the working directory, once.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_AIMV2_CACHE", ".cache")
    assert validation_env.cache_dir() == str(tmp_path / ".cache")
    monkeypatch.delenv("KERAS_AIMV2_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert validation_env.cache_dir() == str(tmp_path / "xdg" / "keras-aimv2")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert validation_env.cache_dir() == str(
        tmp_path / "home" / ".cache" / "keras-aimv2"
    )


def test_only_the_pins_name_the_environment(tmp_path):
    first, second, third = (tmp_path / name for name in "abc")
    first.write_text("# made by hand\ntensorflow==2.16.2\nnumpy==1.26.4\n")
    second.write_text("# explained\n\ntensorflow==2.16.2\n numpy==1.26.4\n")
    third.write_text("tensorflow==2.16.2\nnumpy==1.26.3\n")
    assert validation_env.requirements_hash(
        first
    ) == validation_env.requirements_hash(second)
    assert validation_env.requirements_hash(
        first
    ) != validation_env.requirements_hash(third)


def test_packaged_tool_files_exist():
    for path in (validation_env.SCRIPT, validation_env.REQUIREMENTS):
        assert os.path.isfile(path), path
    with open(validation_env.REQUIREMENTS) as file:
        assert "tensorflow-data-validation==1.16.1\n" in file.read()


# Creation.


def test_missing_environment_is_not_created_when_told_not_to(fake):
    with pytest.raises(
        validation_env.ValidationEnvironmentError,
        match="has not been created: run `aimv2 validate --setup`",
    ):
        validation_env.environment_python(create=False)
    assert not fake["cache"].exists()


def test_environment_is_created_once_and_renamed_into_place(fake):
    messages = []
    python = validation_env.environment_python(log=messages.append)
    directory = validation_env.environment_dir()
    assert python == os.path.join(directory, "bin", "python")
    assert validation_env.is_ready(directory)
    assert messages[0] == (
        f"creating the validation environment in {directory} (about 1.5 "
        "minutes, 2.9 GB, once)"
    )
    assert messages[-1].startswith("validation environment ready in")
    assert not leftovers(fake["cache"])
    # Scripts and pyvenv.cfg name the final folder, not the partial one.
    with open(os.path.join(directory, "bin", "tool")) as file:
        assert file.read() == f"#!{directory}/bin/python\n"
    with open(os.path.join(directory, "pyvenv.cfg")) as file:
        assert f"venv {directory}\n" in file.read()
    calls = fake["log"].read_text()
    assert "-m pip install -q --upgrade pip" in calls
    assert (
        f"-m pip install -q --only-binary=pyarrow -r "
        f"{validation_env.REQUIREMENTS}" in calls
    )
    # Ready: the second call runs nothing.
    fake["log"].write_text("")
    assert validation_env.environment_python(log=messages.append) == python
    assert fake["log"].read_text() == ""


def test_failed_creation_shows_pip_and_leaves_nothing(fake, monkeypatch):
    monkeypatch.setenv("FAKE_PIP", "fail")
    with pytest.raises(validation_env.ValidationEnvironmentError) as error:
        validation_env.environment_python(log=lambda message: None)
    message = str(error.value)
    assert (
        "--only-binary=pyarrow" in message and "exited with status 1" in message
    )
    assert "No matching distribution found for tensorflow" in message
    assert os.listdir(fake["cache"]) == [
        os.path.basename(validation_env.environment_dir()) + ".lock"
    ]


def test_interrupted_creation_leaves_no_ready_environment(fake):
    directory = validation_env.environment_dir()
    # Ctrl-C: the creation removes what it made.
    process = child(FAKE_PIP="interrupt")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "KeyboardInterrupt" in stderr
    assert not os.path.exists(directory) and not leftovers(fake["cache"])
    # Killed outright: the partial folder stays, but is not taken as ready.
    started = fake["tmp"] / "started"
    process = child(FAKE_PIP="hang", FAKE_STARTED=str(started))
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert leftovers(fake["cache"]) and not os.path.exists(directory)
    with pytest.raises(validation_env.ValidationEnvironmentError):
        validation_env.environment_python(create=False)
    # The next creation removes the leftover and makes a complete one.
    messages = []
    validation_env.environment_python(log=messages.append)
    assert "removing an incomplete validation environment" in messages[0]
    assert validation_env.is_ready(directory)
    assert not leftovers(fake["cache"])


def test_a_folder_without_the_ready_marker_is_rebuilt(fake):
    # E.g. made by hand, or by an older version: it has a Python but was
    # never marked ready.
    directory = validation_env.environment_dir()
    os.makedirs(os.path.join(directory, "bin"))
    write_fake_python(os.path.join(directory, "bin", "python"))
    assert not validation_env.is_ready(directory)
    messages = []
    validation_env.environment_python(log=messages.append)
    assert messages[0].endswith(os.path.basename(directory))
    assert validation_env.is_ready(directory)
    assert len(venv_calls(fake["log"])) == 1


def test_two_processes_creating_at_once_build_it_once(fake):
    processes = [child(FAKE_SLOW="2") for _ in range(2)]
    results = [process.communicate(timeout=60) for process in processes]
    assert [process.returncode for process in processes] == [0, 0]
    python = os.path.join(validation_env.environment_dir(), "bin", "python")
    assert [stdout.strip() for stdout, _ in results] == [python, python]
    assert len(venv_calls(fake["log"])) == 1
    waited = ["waiting for another process" in err for _, err in results]
    assert sorted(waited) == [False, True]


def test_missing_python_3_11_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("KERAS_AIMV2_TFDV_PYTHON", raising=False)
    monkeypatch.setenv("FAKE_LOG", os.devnull)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_fake_python(bin_dir / "python3", version="3 12")
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(
        sys, "executable", write_fake_python(tmp_path / "py", "3 13")
    )
    with pytest.raises(
        validation_env.ValidationEnvironmentError,
        match=r"needs Python 3\.11 .*apt-get install python3\.11 "
        r"python3\.11-venv.*KERAS_AIMV2_TFDV_PYTHON",
    ):
        validation_env.find_python()
    # A python3.11 on the PATH is found.
    found = write_fake_python(bin_dir / "python3.11")
    assert validation_env.find_python() == found
    # The variable names the interpreter, and only it.
    monkeypatch.setenv("KERAS_AIMV2_TFDV_PYTHON", str(bin_dir / "python3"))
    with pytest.raises(
        validation_env.ValidationEnvironmentError,
        match=r"KERAS_AIMV2_TFDV_PYTHON must be the path of a Python 3\.11 "
        r"interpreter\. Received: '.*python3', which is Python 3\.12\.",
    ):
        validation_env.find_python()


# `aimv2 validate`.


def test_validate_help_needs_no_environment(fake, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["validate", "--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: aimv2 validate")
    assert "--schema FILE" in usage and "aimv2 validate --setup" in usage
    assert not fake["cache"].exists()


def test_validate_setup_prints_the_python(fake, capsys):
    assert validation_env.main(["--setup"]) == 0
    captured = capsys.readouterr()
    assert captured.out == validation_env.environment_python() + "\n"
    assert "creating the validation environment" in captured.err
    assert validation_env.main(["--setup", "data"]) == 2
    assert "--setup takes no other arguments" in capsys.readouterr().err


def test_validate_exits_3_when_the_environment_cannot_be_made(
    fake, monkeypatch, capsys
):
    monkeypatch.setenv("FAKE_PIP", "fail")
    assert validation_env.main([str(fake["tmp"])]) == 3
    error = capsys.readouterr().err
    assert "\naimv2 validate: error: Creating the validation" in error
    assert error.rstrip().endswith(
        "No matching distribution found for tensorflow"
    )
