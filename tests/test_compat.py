"""Importing the package changes no global state; private hooks are checked.

`import keras_aimv2` sets no environment variable and writes nothing into
keras-hub's preset tables; Apple's checkpoint names resolve through the
package's own `from_preset`; every private Keras or keras-hub API lives in
`keras_aimv2.compat`, which refuses to run, with a clear message, when a
hook it relies on is gone; JAX's XLA:CPU tuning is an explicit call that
`aimv2 pretrain` makes.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import keras_hub
import numpy as np
import pytest
from conftest import only_on
from conftest import tiny_pretrainer
from conftest import to_numpy
from keras_hub.src.utils import preset_utils

import keras_aimv2
from keras_aimv2 import compat
from keras_aimv2 import xla_cpu
from keras_aimv2.cli import main
from keras_aimv2.models import aimv2_presets

NAME = "aimv2_large_patch14_224"
TESTED = "keras >= 3.15, < 4 (tested 3.15.1), keras-hub >= 0.32 (tested 0.32.0)"
PACKAGE_MODULES = ("keras_aimv2", "keras_aimv2.models", "keras_aimv2.cli")


def _python(code, **environment):
    """Run `code` in a fresh Python on this backend; its last stdout line
    as JSON. `XLA_FLAGS` (which this test process sets) is left out."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(KERAS_BACKEND=keras.config.backend(), **environment)
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_import_sets_no_environment_variable_and_registers_no_preset():
    # The third-party modules the package imports set variables of their
    # own (TensorFlow's TF2_BEHAVIOR, ...): imported first, they are not
    # counted.
    dependencies = _python(
        f"""
        import json, sys
        before = set(sys.modules)
        for name in {PACKAGE_MODULES}:
            __import__(name)
        print(json.dumps([
            name for name in sys.modules
            if name not in before and "." not in name
            and not name.startswith(("_", "keras_aimv2"))
            and name not in sys.stdlib_module_names
        ]))
        """
    )
    assert "keras_hub" in dependencies
    result = _python(
        f"""
        import importlib, json, os, sys
        for name in {dependencies}:
            try:
                importlib.import_module(name)
            except Exception:
                pass
        from keras_hub.src.utils import preset_utils

        def tables():
            return (
                {{k: id(v) for k, v in preset_utils.BUILTIN_PRESETS.items()}},
                {{
                    str(cls): sorted(presets)
                    for cls, presets in
                    preset_utils.BUILTIN_PRESETS_FOR_BACKBONE.items()
                }},
            )

        environ, presets = dict(os.environ), tables()
        for name in {PACKAGE_MODULES}:
            __import__(name)
        import keras_aimv2
        changed = sorted(
            key for key in set(environ) | set(os.environ)
            if environ.get(key) != os.environ.get(key)
        )
        jax = sys.modules.get("jax")
        started = False
        if jax is not None:
            from jax._src import xla_bridge
            started = xla_bridge.backends_are_initialized()
        print(json.dumps({{
            "changed": changed,
            "tables_unchanged": presets == tables(),
            "presets": len(presets[0]),
            "aimv2_presets": [
                name for name in preset_utils.BUILTIN_PRESETS if "aimv2" in name
            ],
            "listed": sorted(keras_aimv2.AIMV2Backbone.presets),
            "jax_started": started,
        }}))
        """
    )
    assert result["changed"] == []
    assert result["tables_unchanged"]
    assert result["presets"] > 0  # keras-hub's own are there
    assert result["aimv2_presets"] == []
    # The names are listed on the package's classes all the same.
    assert NAME in result["listed"]
    # Nothing started JAX, so `xla_cpu.configure()` can still take effect.
    assert not result["jax_started"]


@pytest.fixture
def named_preset(tmp_path, monkeypatch):
    """A tiny backbone and converter saved as the preset `NAME`."""
    monkeypatch.setenv(aimv2_presets.PRESETS_ENV_VARIABLE, str(tmp_path))
    directory = tmp_path / NAME
    backbone = tiny_pretrainer().backbone
    backbone.save_to_preset(str(directory))
    size = tuple(backbone.image_shape[:2])
    converter = keras_aimv2.AIMV2ImageConverter(image_size=size)
    converter.save_to_preset(str(directory))
    return backbone, str(directory)


def _same_weights(a, b):
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights, strict=True):
        np.testing.assert_array_equal(to_numpy(x), to_numpy(y))


def test_named_presets_resolve_through_the_package_from_preset(named_preset):
    backbone, directory = named_preset
    loaded = keras_aimv2.AIMV2Backbone.from_preset(NAME)
    _same_weights(backbone, loaded)
    converter = keras_aimv2.AIMV2ImageConverter.from_preset(NAME)
    assert converter.image_size == tuple(backbone.image_shape[:2])
    preprocessor = keras_aimv2.AIMV2ImageClassifierPreprocessor.from_preset(
        NAME
    )
    assert preprocessor.image_converter.image_size == converter.image_size
    classifier = keras_aimv2.AIMV2ImageClassifier.from_preset(
        NAME, num_classes=3
    )
    _same_weights(backbone, classifier.backbone)
    # keras-hub's own class loads the saved directory.
    loaded = keras_hub.models.Backbone.from_preset(directory)
    assert isinstance(loaded, keras_aimv2.AIMV2Backbone)
    _same_weights(backbone, loaded)
    # but knows nothing of the name: the package registered none.
    assert NAME not in keras_hub.models.Backbone.presets
    assert NAME not in preset_utils.BUILTIN_PRESETS
    with pytest.raises(ValueError, match="Unknown preset identifier"):
        keras_hub.models.Backbone.from_preset(NAME)


def test_a_bare_backbone_preset_gets_the_default_converter(tmp_path):
    # `preset_arguments` (the keras-hub hook `PresetArguments` wraps).
    backbone = tiny_pretrainer().backbone
    backbone.save_to_preset(str(tmp_path))
    preprocessor = keras_aimv2.AIMV2ImageClassifierPreprocessor.from_preset(
        str(tmp_path)
    )
    converter = preprocessor.image_converter
    assert isinstance(converter, keras_aimv2.AIMV2ImageConverter)
    assert converter.image_size == tuple(backbone.image_shape[:2])


def test_other_names_keep_keras_hub_behaviour(tmp_path, monkeypatch):
    assert aimv2_presets.resolve_preset("bert_tiny_en_uncased") == (
        "bert_tiny_en_uncased"
    )
    assert aimv2_presets.resolve_preset(str(tmp_path)) == str(tmp_path)
    errors = []
    for cls in (keras_hub.models.Backbone, keras_aimv2.AIMV2Backbone):
        with pytest.raises(ValueError) as error:
            cls.from_preset("not_a_preset_name")
        errors.append(str(error.value))
    assert errors[0] == errors[1]
    # A known name that is not converted says how to convert it.
    monkeypatch.setenv(aimv2_presets.PRESETS_ENV_VARIABLE, str(tmp_path))
    with pytest.raises(aimv2_presets.PresetNotConvertedError) as error:
        keras_aimv2.AIMV2ImageConverter.from_preset(NAME)
    assert f"aimv2 convert SOURCE {tmp_path / NAME}" in str(error.value)


def _owner(cls, name):
    return next(c for c in cls.__mro__ if name in vars(c))


def _drop(monkeypatch, cls, name):
    monkeypatch.delattr(_owner(cls, name), name)


# How each hook is broken, and what the message must name.
BREAKS = {
    "optimizer clip removed": (
        lambda m: _drop(m, keras.optimizers.Optimizer, "_clip_gradients"),
        "_clip_gradients",
    ),
    "optimizer clip no longer called": (
        lambda m: m.setattr(
            _owner(keras.optimizers.Optimizer, "_backend_apply_gradients"),
            "_backend_apply_gradients",
            lambda self, grads, variables: None,
        ),
        "no longer uses `_clip_gradients`",
    ),
    "variable value renamed": (
        lambda m: m.setattr(
            _owner(keras.Variable, "value"),
            "value",
            property(lambda self: self._renamed),
        ),
        "no longer uses `_value`",
    ),
    "tokenizer hook removed": (
        lambda m: _drop(
            m, keras_hub.tokenizers.Tokenizer, "_update_special_token_ids"
        ),
        "_update_special_token_ids",
    ),
    "tokenizer signature changed": (
        lambda m: m.setattr(
            keras_hub.tokenizers.Tokenizer,
            "_add_special_token",
            lambda self, token: None,
        ),
        "_add_special_token takes ['self', 'token']",
    ),
    "preprocessor hook removed": (
        lambda m: _drop(
            m, keras_hub.models.Preprocessor, "_add_missing_kwargs"
        ),
        "_add_missing_kwargs",
    ),
    "preset file renamed": (
        lambda m: m.setattr(preset_utils, "TASK_CONFIG_FILE", "task2.json"),
        "names its TASK_CONFIG_FILE 'task2.json'",
    ),
}


@pytest.mark.parametrize("kind", list(BREAKS))
def test_a_missing_hook_is_a_clear_error(kind, monkeypatch):
    compat.check_compatibility()  # the installed versions pass
    damage, expected = BREAKS[kind]
    damage(monkeypatch)
    with pytest.raises(compat.IncompatibleVersionError) as error:
        compat.check_compatibility()
    message = str(error.value)
    assert isinstance(error.value, ImportError)
    assert expected in message
    assert TESTED in message
    assert f"Keras {keras.version()}" in message
    assert f"keras-hub {keras_hub.__version__}" in message


def test_a_missing_jax_hook_is_a_clear_error(monkeypatch):
    import jax
    from jax._src import xla_bridge

    monkeypatch.delattr(xla_bridge, "backends_are_initialized")
    for check in (compat.check_compatibility, compat.jax_backends_initialized):
        with pytest.raises(compat.IncompatibleVersionError) as error:
            check()
        message = str(error.value)
        assert "backends_are_initialized" in message
        assert f"jax {jax.__version__}" in message
        assert f"{TESTED}, jax >= 0.10.2 (tested 0.10.2)" in message


@only_on("tensorflow")
def test_a_missing_tensorflow_hook_is_a_clear_error(monkeypatch):
    # Without it, AIMV2AdamW would sum the replicas' gradients twice.
    optimizer = keras.optimizers.Optimizer
    _drop(monkeypatch, optimizer, "_all_reduce_sum_gradients")
    with pytest.raises(compat.IncompatibleVersionError) as error:
        compat.check_compatibility()
    assert "_all_reduce_sum_gradients" in str(error.value)
    monkeypatch.undo()
    _drop(monkeypatch, keras.Model, "_maybe_symbolic_build")
    with pytest.raises(compat.IncompatibleVersionError, match="symbolic"):
        compat.check_compatibility()


@pytest.mark.parametrize(
    "keras_version, hub_version",
    [("4.0.0", "0.32.0"), ("3.14.2", "0.32.0"), ("3.15.1", "0.31.1")],
)
def test_versions_outside_the_declared_range_are_refused(
    keras_version, hub_version, monkeypatch
):
    monkeypatch.setattr(keras, "version", lambda: keras_version)
    monkeypatch.setattr(keras_hub, "__version__", hub_version)
    with pytest.raises(compat.IncompatibleVersionError) as error:
        compat.check_compatibility()
    message = str(error.value)
    assert f"Keras {keras_version}, keras-hub {hub_version}" in message
    assert TESTED in message


def test_versions_inside_the_declared_range_pass(monkeypatch):
    for version in ("3.15.0", "3.16.2", "3.99.0.dev2026"):
        monkeypatch.setattr(keras, "version", lambda v=version: v)
        compat.check_versions()


@only_on("jax")
def test_import_fails_on_a_missing_hook():
    code = """
        from keras.src.optimizers import base_optimizer
        del base_optimizer.BaseOptimizer._clip_gradients
        import keras_aimv2
    """
    env = dict(os.environ, KERAS_BACKEND="jax")
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert completed.returncode == 1
    assert "IncompatibleVersionError" in completed.stderr
    assert "_clip_gradients" in completed.stderr
    assert TESTED in completed.stderr


# === XLA:CPU tuning, an explicit call ===


def test_runs_on_cpu_reads_jax_platforms_then_the_plugins(monkeypatch):
    assert xla_cpu.runs_on_cpu({"JAX_PLATFORMS": "cpu"})
    assert not xla_cpu.runs_on_cpu({"JAX_PLATFORMS": "cuda,cpu"})
    assert not xla_cpu.runs_on_cpu({"JAX_PLATFORMS": "tpu"})
    monkeypatch.setattr(xla_cpu, "accelerator_plugins", lambda: [])
    assert xla_cpu.runs_on_cpu({})
    monkeypatch.setattr(xla_cpu, "accelerator_plugins", lambda: ["cuda"])
    assert not xla_cpu.runs_on_cpu({})
    assert xla_cpu.runs_on_cpu({"JAX_PLATFORMS": "cpu"})


def test_configure_sets_the_flags_only_for_jax_on_a_cpu_before_it_starts(
    monkeypatch,
):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    started = [False]
    monkeypatch.setattr(compat, "jax_backends_initialized", lambda: started[0])
    if keras.config.backend() != "jax":
        assert not xla_cpu.configure()
        assert "XLA_FLAGS" not in os.environ
        return
    started[0] = True  # too late: JAX has read XLA_FLAGS
    assert not xla_cpu.configure()
    assert "XLA_FLAGS" not in os.environ
    started[0] = False
    monkeypatch.setenv("JAX_PLATFORMS", "cuda")  # an accelerator host
    assert not xla_cpu.configure()
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert xla_cpu.configure()
    flags = os.environ["XLA_FLAGS"].split()
    assert flags[0] == "--xla_force_host_platform_device_count=2"
    assert "--xla_cpu_use_xnnpack=false" in flags
    assert "--xla_cpu_experimental_ynn_fusion_type=" in flags
    assert not xla_cpu.configure()  # named already: left alone
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_xnnpack=true")
    assert not xla_cpu.configure()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=true"


@pytest.mark.parametrize(
    "command, recipe, configures",
    [
        ("pretrain", "tiny_scenes_cpu", True),
        ("probe", "probe_fashion_mnist", True),
        ("recipes", None, False),
    ],
)
def test_pretrain_and_probe_configure_xla_before_running(
    command, recipe, configures, monkeypatch, tmp_path, capsys
):
    import keras_aimv2.training
    import keras_aimv2.transfer

    calls = []
    monkeypatch.setattr(xla_cpu, "configure", lambda: calls.append("xla"))
    for module, name in (
        (keras_aimv2.training, "pretrain"),
        (keras_aimv2.transfer, "probe"),
    ):
        monkeypatch.setattr(module, name, lambda *args, n=name: calls.append(n))
    monkeypatch.setenv("KERAS_BACKEND", keras.config.backend())
    argv = [command] + (
        [recipe, "--output-dir", str(tmp_path)] if recipe else []
    )
    assert main(argv) == 0
    assert calls == (["xla", command] if configures else [])


@only_on("jax")
def test_flags_set_after_importing_the_package_reach_jax():
    # `aimv2 pretrain` calls `configure()` after the package (and Keras,
    # keras-hub, TensorFlow) are imported: JAX still compiles with them.
    code = """
        import json, os, sys
        import keras_aimv2
        from keras_aimv2 import xla_cpu
        changed = xla_cpu.configure() if sys.argv[1] == "on" else False
        import jax, jax.numpy as jnp

        def step(a, b):
            return jax.nn.gelu(a @ b + 1.0) @ b

        a = jnp.ones((128, 128))
        text = jax.jit(step).lower(a, a).compile().as_text().lower()
        print(json.dumps({
            "changed": changed,
            "flags": os.environ.get("XLA_FLAGS", ""),
            "ynn": "ynn" in text or "xnn" in text,
        }))
    """
    results = {}
    for setting in ("on", "off"):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        env.update(KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
        completed = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), setting],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert completed.returncode == 0, completed.stderr[-3000:]
        results[setting] = json.loads(completed.stdout.splitlines()[-1])
    assert results["on"]["changed"]
    assert "--xla_cpu_use_xnnpack=false" in results["on"]["flags"]
    assert not results["on"]["ynn"]
    # Without it, JAX 0.10's XLA:CPU fuses the matmuls into YNNPACK calls.
    assert results["off"]["ynn"]


def test_tensorflow_kernels_preferred_for_bfloat16_on_a_cpu():
    # No GPU or TPU here: TensorFlow's oneDNN kernels reach the bf16 units.
    assert xla_cpu.prefers_tensorflow_kernels("bfloat16") is True
    assert xla_cpu.prefers_tensorflow_kernels("float32") is False
    assert xla_cpu.prefers_tensorflow_kernels("float16") is False
