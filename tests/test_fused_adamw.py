"""AIMV2AdamW's fused in-place update on torch equals Keras's AdamW.

On torch, `aimv2_adamw(...)` updates through `torch._fused_adamw_`
(`keras_aimv2.compat.FusedTorchAdamW`); `fused=False` keeps Keras's own
update, the reference here. On JAX and TensorFlow both are Keras's update
and the fused path must never run.
"""

import keras
import numpy as np
import pytest

from keras_aimv2 import compat
from keras_aimv2.optimization import AIMV2AdamW
from keras_aimv2.optimization import aimv2_adamw

TORCH = keras.config.backend() == "torch"
# Fewer on JAX and TensorFlow, where both runs are Keras's own update
# and each eager step is slow.
STEPS = 5 if TORCH else 2
PEAK = 1e-2

# Variables of a small model: `bias` and `scale` are excluded from decay
# (NO_DECAY), `unused` gets no gradient, `amax` is overwritten with its
# gradient (as float8 statistics are).
SHAPES = {
    "kernel": (8, 16),
    "bias": (16,),
    "scale": (16,),
    "head_kernel": (16, 4),
    "unused": (4, 4),
    "amax": (3,),
}


def _schedule():
    return keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=50, warmup_target=PEAK, warmup_steps=3
    )


def _variables(seed=0):
    rng = np.random.default_rng(seed)
    variables = [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=name)
        for name, shape in SHAPES.items()
    ]
    variables[-1].overwrite_with_gradient = True
    return variables


def _gradients(variables, batch, seed=1):
    """Fresh gradients of batch `batch`: large (clipped) on odd batches."""
    rng = np.random.default_rng([seed, batch])
    size = 3.0 if batch % 2 else 0.02
    grads = []
    for variable in variables:
        value = rng.normal(size=variable.shape).astype("float32") * size
        grads.append(keras.ops.convert_to_tensor(value, variable.dtype))
    grads[list(SHAPES).index("unused")] = None
    return grads


def _train(fused, accumulation=1, variables=None):
    """Variables and optimizer slots after `STEPS` updates."""
    variables = _variables() if variables is None else variables
    optimizer = aimv2_adamw(
        learning_rate=_schedule(),
        peak_learning_rate=PEAK,
        weight_decay=0.05,
        clipnorm=1.0,
        gradient_accumulation_steps=accumulation,
        fused=fused,
    )
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        for batch in range(STEPS * accumulation):
            optimizer.apply(_gradients(variables, batch), variables)
    trained = {v.name: keras.ops.convert_to_numpy(v) for v in variables}
    for slot in optimizer.variables:
        trained[f"slot {slot.name}"] = keras.ops.convert_to_numpy(slot)
    return trained


def _spy(monkeypatch):
    """Count the fused updates and, on torch, the fused kernel's calls."""
    calls = {"update": 0, "kernel": 0}
    update = compat.fused_adamw_update

    def counted_update(*args):
        calls["update"] += 1
        return update(*args)

    monkeypatch.setattr(compat, "fused_adamw_update", counted_update)
    if TORCH:
        import torch

        kernel = torch._fused_adamw_

        def counted_kernel(*args, **kwargs):
            calls["kernel"] += 1
            return kernel(*args, **kwargs)

        monkeypatch.setattr(torch, "_fused_adamw_", counted_kernel)
    return calls


def _assert_same(fused, reference):
    assert fused.keys() == reference.keys()
    for name in reference:
        np.testing.assert_allclose(
            fused[name], reference[name], rtol=0, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("accumulation", [1, 2])
def test_fused_update_equals_keras_adamw(accumulation, monkeypatch):
    calls = _spy(monkeypatch)
    fused = _train(True, accumulation)
    fused_calls = dict(calls)
    reference = _train(False, accumulation)
    _assert_same(fused, reference)
    assert calls == fused_calls  # `fused=False` never reached the kernel
    assert not np.allclose(fused["kernel"], _variables()[0].numpy())
    if TORCH:
        # One pass over every batch; one kernel call per decay group.
        assert fused_calls["update"] == STEPS * accumulation
        assert fused_calls["kernel"] == 2 * STEPS
    else:
        assert fused_calls == {"update": 0, "kernel": 0}


def test_fused_update_under_mixed_bfloat16(monkeypatch):
    calls = _spy(monkeypatch)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        results = []
        for fused in (True, False):
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((8,)),
                    keras.layers.Dense(16),
                    keras.layers.Dense(4),
                ]
            )
            variables = model.trainable_variables
            assert {v.dtype for v in variables} == {"float32"}
            optimizer = aimv2_adamw(
                learning_rate=_schedule(), peak_learning_rate=PEAK, fused=fused
            )
            for batch in range(STEPS):
                rng = np.random.default_rng(batch)
                grads = [
                    keras.ops.convert_to_tensor(
                        rng.normal(size=v.shape).astype("float32")
                    )
                    for v in variables
                ]
                optimizer.apply(grads, variables)
            assert {v.dtype for v in variables} == {"float32"}
            results.append([keras.ops.convert_to_numpy(v) for v in variables])
    finally:
        keras.config.set_dtype_policy(previous)
    for fused, reference in zip(*results, strict=True):
        np.testing.assert_allclose(fused, reference, rtol=0, atol=1e-6)
    assert calls["update"] == (STEPS if TORCH else 0)


def _allocated_bytes(step):
    """Bytes of every new tensor the torch ops of `step()` create."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    def storages(tree):
        return {
            t.untyped_storage().data_ptr()
            for t in torch.utils._pytree.tree_leaves(tree)
            if isinstance(t, torch.Tensor)
        }

    class CountAllocations(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            given = storages((args, kwargs))
            for tensor in torch.utils._pytree.tree_leaves(out):
                if isinstance(tensor, torch.Tensor):
                    pointer = tensor.untyped_storage().data_ptr()
                    if pointer not in given:
                        CountAllocations.total += tensor.nbytes
            return out

    with CountAllocations():
        step()
    return CountAllocations.total


def _full(variables):
    return [keras.ops.full(v.shape, 0.5, dtype="float32") for v in variables]


def test_fused_update_allocates_no_full_size_temporaries():
    # 8M parameters (32 MB) in a few large variables and their biases.
    shapes = [(1024, 1024)] * 8 + [(1024,)] * 8
    results = {}
    for fused in (True, False):
        variables = [
            keras.Variable(
                np.full(shape, 0.1, "float32"),
                name="bias" if len(shape) == 1 else "kernel",
            )
            for shape in shapes
        ]
        optimizer = aimv2_adamw(learning_rate=1e-3, fused=fused)
        optimizer.build(variables)

        optimizer.apply(_full(variables), variables)  # builds the state
        step_grads = _full(variables)
        applies = compat.fused_update_applies(optimizer, step_grads, variables)
        assert applies == (fused and TORCH)
        if TORCH:
            results[fused] = _allocated_bytes(
                lambda o=optimizer, g=step_grads, v=variables: o.apply(g, v)
            )
    if TORCH:
        parameter_bytes = 4 * sum(int(np.prod(s)) for s in shapes)
        # Keras's path copies the clipped gradients and makes temporaries
        # for every variable; the fused one only a few scalars.
        assert results[False] > 2 * parameter_bytes
        assert results[True] < 0.01 * parameter_bytes


@pytest.mark.parametrize(
    "options",
    [
        {"amsgrad": True},
        {"use_ema": True},
        {"clipvalue": 1.0},
        {"fused": False},
    ],
)
def test_unhandled_options_keep_keras_update(options):
    variables = _variables()[:4]
    grads = _gradients(_variables(), 0)[:4]
    plain = AIMV2AdamW(learning_rate=1e-3, weight_decay=0.1)
    other = AIMV2AdamW(learning_rate=1e-3, weight_decay=0.1, **options)
    assert compat.fused_update_applies(plain, grads, variables) == TORCH
    assert not compat.fused_update_applies(other, grads, variables)


def test_fused_argument_is_checked_and_saved():
    with pytest.raises(ValueError, match="`fused` must be True or False"):
        AIMV2AdamW(weight_decay=0.1, fused="yes")
    optimizer = aimv2_adamw(learning_rate=1e-3, fused=False)
    config = optimizer.get_config()
    assert config["fused"] is False
    assert AIMV2AdamW.from_config(config).uses_fused_update() is False
    assert aimv2_adamw(learning_rate=1e-3).uses_fused_update() is True


def test_a_missing_fused_update_hook_is_a_clear_error(monkeypatch):
    # If Adam kept its moments elsewhere, the fused update would read
    # stale slots: the check refuses that on torch, where it runs.
    monkeypatch.setattr(
        keras.optimizers.Adam, "build", lambda self, var_list: None
    )
    if TORCH:
        with pytest.raises(compat.IncompatibleVersionError) as error:
            compat.check_hooks()
        message = str(error.value)
        assert "no longer uses `_momentums`" in message
        assert compat.TESTED_TORCH in message
    else:
        compat.check_hooks()  # no fused update, no hook to check
