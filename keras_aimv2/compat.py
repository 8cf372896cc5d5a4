"""Every private Keras, keras-hub, JAX and PyTorch API this package uses.

The rest of `keras_aimv2` uses public API only. What is here overrides or
reads private behaviour of the versions named in `TESTED`, each piece with
a comment saying what it replaces and why no public API does the job. A
newer version may rename or change any of it, and training would then go
on differently without a word (a gradient summed twice over the replicas,
clipped before the sum, a tokenizer padding with the wrong id). So
importing this module, which `import keras_aimv2` does first, checks that
the installed versions lie in the declared range and that every hook below
still exists with the signature and the call site it relies on, and
raises an `IncompatibleVersionError` naming the hook, the installed
versions and the tested range otherwise (`check_compatibility`).

The classes here are mixins: a class of the package that must override a
private method inherits it from one of them, and overrides a public-named
method of the mixin instead, so that private names appear in this module
only.
"""

import contextlib
import inspect
import json
import math
import os
import re
import sys

import keras
import keras_hub

try:
    from keras_hub.src.utils import preset_utils as _preset_utils
except ImportError:  # reported by `check_compatibility`, naming the hook
    _preset_utils = None
try:
    from keras_hub.src.utils import tensor_utils as _tensor_utils
except ImportError:  # reported by `check_compatibility`, naming the hook
    _tensor_utils = None

# The declared and tested range (pyproject.toml's dependencies).
KERAS_RANGE = ((3, 15), (4, 0))  # keras >= 3.15, < 4
KERAS_HUB_MINIMUM = (0, 32)  # keras-hub >= 0.32
TESTED = "keras >= 3.15, < 4 (tested 3.15.1), keras-hub >= 0.32 (tested 0.32.0)"
# The JAX hook (`jax_backends_initialized`) was checked on this version.
TESTED_JAX = "jax >= 0.10.2 (tested 0.10.2)"


class IncompatibleVersionError(ImportError):
    """The installed Keras, keras-hub or JAX lacks a hook this package needs.

    Raised at `import keras_aimv2` rather than training differently.
    """


def _installed():
    return f"Keras {keras.version()}, keras-hub {keras_hub.__version__}"


def _incompatible(problem, tested=TESTED):
    return IncompatibleVersionError(
        f"keras_aimv2 cannot run with the installed {_installed()}: "
        f"{problem}. keras_aimv2 is tested with {tested}; install versions "
        "in that range."
    )


def _major_minor(version):
    """`(major, minor)` of a version string such as `"3.15.1"`, or None."""
    match = re.match(r"(\d+)\.(\d+)", str(version))
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_versions():
    """Raise unless Keras and keras-hub lie in the declared range.

    Raises:
        IncompatibleVersionError: naming the installed versions and the
            tested range.
    """
    keras_version = _major_minor(keras.version())
    low, high = KERAS_RANGE
    if keras_version is None or not low <= keras_version < high:
        raise _incompatible(
            f"Keras {keras.version()} is outside the supported range"
        )
    hub_version = _major_minor(keras_hub.__version__)
    if hub_version is None or hub_version < KERAS_HUB_MINIMUM:
        raise _incompatible(
            f"keras-hub {keras_hub.__version__} is older than supported"
        )


# === The hooks and their checks ===

# (description, check, tested) triples: `check()` raises `_HookMissing`
# saying what is missing; `tested` is the range named then. `check_hooks`
# runs them all.
_HOOKS = []


class _HookMissing(Exception):
    pass


def _hook(description, tested=TESTED):
    """Register `check` as the check of the hook `description`."""

    def register(check):
        _HOOKS.append((description, check, tested))
        return check

    return register


def _method(owner, name, parameters=None):
    """`owner.name`, checked to exist and to take `parameters` first."""
    label = getattr(owner, "__qualname__", getattr(owner, "__name__", owner))
    method = getattr(owner, name, None)
    if not callable(method):
        raise _HookMissing(f"{label} has no method `{name}`")
    if parameters is not None:
        try:
            found = list(inspect.signature(method).parameters)
        except (TypeError, ValueError):
            found = None
        if found is None or found[: len(parameters)] != list(parameters):
            raise _HookMissing(
                f"{label}.{name} takes {found}, not {list(parameters)}"
            )
    return method


def _names(code):
    """Every attribute and global name `code` and its nested code use."""
    names = set(code.co_names)
    for constant in code.co_consts:
        if inspect.iscode(constant):
            names |= _names(constant)
    return names


def _uses(function, name):
    """Check that `function` (a call site of a hook) still uses `name`."""
    target = inspect.unwrap(getattr(function, "__func__", function))
    code = getattr(target, "__code__", None)
    if code is None or name not in _names(code):
        raise _HookMissing(
            f"{getattr(target, '__qualname__', target)} no longer uses `{name}`"
        )


def _defining_class(cls, name):
    """The class of `cls`'s MRO that defines `name`."""
    for owner in cls.__mro__:
        if name in vars(owner):
            return owner
    raise _HookMissing(f"{cls.__qualname__} has no attribute `{name}`")


def _backend():
    return keras.config.backend()


# --- Optimizer: the gradient that global-norm clipping sees ---
#
# Replaces: nothing public. Keras applies `global_clipnorm` (public, and
# what `aimv2_adamw` sets) inside `Optimizer._clip_gradients`, on every
# update, after averaging accumulated gradients; no public method sees the
# gradient between the backward pass and the clip. AIMV2AdamW needs that
# point to (a) add up the repeated rows of TensorFlow's `IndexedSlices`
# (an embedding's gradient), whose norm Keras would otherwise take row by
# row, and (b) under `tf.distribute`, sum the replicas' gradients before
# clipping instead of after: Keras's TensorFlow optimizer clips each
# replica's gradient and then sums in `_all_reduce_sum_gradients` (called
# from `_backend_update_step`), which `GradientClippingHooks` then skips so
# that the sum happens once. If that method were renamed, the override
# would silently stop skipping it and every gradient would be summed twice.


@_hook(
    "keras.optimizers.Optimizer._clip_gradients(grads), called for every "
    "update (AIMV2AdamW: clipping the global gradient)"
)
def _check_clip_gradients():
    optimizer = keras.optimizers.Optimizer
    _method(optimizer, "_clip_gradients", ["self", "grads"])
    _uses(_method(optimizer, "_backend_apply_gradients"), "_clip_gradients")


@_hook(
    "keras.optimizers.Optimizer._all_reduce_sum_gradients(grads_and_vars) "
    "of the TensorFlow backend, called after clipping (AIMV2AdamW: the "
    "tf.distribute sum moved before the clip)"
)
def _check_all_reduce_sum_gradients():
    if _backend() != "tensorflow":
        return
    optimizer = keras.optimizers.Optimizer
    _method(optimizer, "_all_reduce_sum_gradients", ["self", "grads_and_vars"])
    _uses(
        _method(optimizer, "_backend_update_step"), "_all_reduce_sum_gradients"
    )


class GradientClippingHooks:
    """Mixin of a `keras.optimizers.Optimizer`: see what clipping sees.

    Override `gradients_to_clip` to change the gradients of an update
    before Keras clips them (`clipnorm`, `global_clipnorm`, `clipvalue`),
    and `sums_replicas_before_clipping` to say that it has already summed
    them over the `tf.distribute` replicas, so that Keras does not sum
    them again after clipping.
    """

    def gradients_to_clip(self, grads):
        """The gradients of an update, as clipping is to see them.

        Args:
            grads: list of gradients (`None` for a variable without one).

        Returns:
            The list of gradients to clip and apply. This default returns
            `grads`.
        """
        return grads

    def sums_replicas_before_clipping(self):
        """Whether `gradients_to_clip` summed the replicas' gradients.

        Returns:
            bool. This default returns `False`.
        """
        return False

    def _clip_gradients(self, grads):
        return super()._clip_gradients(self.gradients_to_clip(grads))

    def _all_reduce_sum_gradients(self, grads_and_vars):
        if self.sums_replicas_before_clipping():
            return list(grads_and_vars)
        return super()._all_reduce_sum_gradients(grads_and_vars)


# --- Optimizer: the variables `apply(grads)` updates ---
#
# Replaces: nothing public. `Optimizer.apply(grads)` without variables
# updates the list the optimizer was built with, `_trainable_variables`;
# `optimizer.variables` holds the optimizer's own slots, not those.
# `LayerDecayAdamW.apply` needs them to scale each variable's step.


@_hook(
    "keras.optimizers.Optimizer._trainable_variables, what apply(grads) "
    "updates (LayerDecayAdamW)"
)
def _check_trainable_variables():
    optimizer = keras.optimizers.Optimizer
    _uses(_method(optimizer, "apply"), "_trainable_variables")
    _uses(_method(optimizer, "build"), "_trainable_variables")


def optimizer_trainable_variables(optimizer):
    """The variables `optimizer.apply(grads)` updates when given none.

    Args:
        optimizer: `keras.optimizers.Optimizer`.

    Returns:
        A list of variables, empty before the optimizer is built.
    """
    return list(getattr(optimizer, "_trainable_variables", None) or [])


# --- Optimizer (torch): AdamW updated in place by torch's fused kernel ---
#
# Replaces: nothing public. On the torch backend a subclass of Keras's
# AdamW runs the generic `BaseOptimizer._backend_apply_gradients`: the
# clipped gradients are a new copy of every gradient, gradient accumulation
# adds into new tensors, and `Adam.update_step` allocates several
# temporaries per variable. `FusedTorchAdamW` overrides that method (the
# one `apply` calls after dropping missing gradients, overwriting
# `overwrite_with_gradient` variables and unscaling a scaled loss, and
# before it applies constraints and counts the iteration) and updates the
# variables' tensors and Adam's moments (`Adam._momentums`,
# `Adam._velocities`, found with `_get_variable_index`) in place with
# `torch._fused_adamw_`, a private PyTorch op (its CPU kernel exists since
# torch 2.4). Which variables decay is Keras's `_use_weight_decay`. The
# update equals Keras's (see `fused_adamw_update`); options it does not
# handle keep Keras's own path.

TESTED_TORCH = "torch >= 2.4 (tested 2.13.0)"


@_hook(
    "keras.optimizers.Optimizer._backend_apply_gradients(grads, "
    "trainable_variables) with Adam's _momentums, _velocities, "
    "_get_variable_index, _use_weight_decay, _accumulated_gradients and "
    "_iterations, and "
    "torch._fused_adamw_ (AIMV2AdamW: the fused AdamW update on torch)",
    tested=f"{TESTED}, {TESTED_TORCH}",
)
def _check_fused_adamw():
    if _backend() != "torch":
        return
    optimizer = keras.optimizers.Optimizer
    apply_gradients = _method(
        optimizer,
        "_backend_apply_gradients",
        ["self", "grads", "trainable_variables"],
    )
    _uses(_method(optimizer, "apply"), "_backend_apply_gradients")
    for name in (
        "_clip_gradients",
        "_apply_weight_decay",
        "_backend_update_step",
        "_accumulated_gradients",
        "_iterations",
    ):
        _uses(apply_gradients, name)
    _method(optimizer, "_get_variable_index", ["self", "variable"])
    _method(optimizer, "_use_weight_decay", ["self", "variable"])
    _uses(_method(optimizer, "_apply_weight_decay"), "_use_weight_decay")
    adam = keras.optimizers.Adam
    for name in ("_momentums", "_velocities"):
        _uses(_method(adam, "build"), name)
        _uses(_method(adam, "update_step"), name)
    import torch

    if not callable(getattr(torch, "_fused_adamw_", None)):
        raise _HookMissing(f"torch {torch.__version__} has no `_fused_adamw_`")


class FusedTorchAdamW:
    """Mixin of a `keras.optimizers.AdamW`: a fused, in-place torch update.

    On the torch backend each update runs through `fused_adamw_update`:
    no copy of the gradients or the variables is made. Elsewhere, and
    whenever `fused_update_applies` says no, Keras's own update runs.
    Override `uses_fused_update` to choose.
    """

    def uses_fused_update(self):
        """Whether to update with torch's fused kernel where it applies.

        Returns:
            bool. This default returns `True`.
        """
        return True

    def _backend_apply_gradients(self, grads, trainable_variables):
        if fused_update_applies(self, grads, trainable_variables):
            return fused_adamw_update(self, grads, trainable_variables)
        return super()._backend_apply_gradients(grads, trainable_variables)


# The dtypes torch's fused AdamW kernel updates.
_FUSED_DTYPES = ("float16", "bfloat16", "float32", "float64")


def fused_update_applies(optimizer, grads, trainable_variables):
    """Whether `fused_adamw_update` can make this update exactly as Keras.

    It can on the torch backend, outside `torch.compile` (which fuses
    Keras's own update), for an AdamW without `amsgrad`, EMA, `clipnorm`
    or `clipvalue` (`global_clipnorm` is handled), whose gradients are
    dense tensors, each its own, on the devices of contiguous variables of
    a floating dtype.

    Args:
        optimizer: `keras.optimizers.AdamW` with `FusedTorchAdamW`.
        grads: list of gradients (none `None`: `apply` has dropped those).
        trainable_variables: list of the variables of `grads`.

    Returns:
        bool.
    """
    if keras.config.backend() != "torch" or not optimizer.uses_fused_update():
        return False
    import torch

    if torch.compiler.is_compiling():
        return False
    if (
        getattr(optimizer, "amsgrad", True)
        or optimizer.use_ema
        or optimizer.clipnorm
        or optimizer.clipvalue
    ):
        return False
    storages = set()
    for grad, variable in zip(grads, trainable_variables, strict=True):
        value = variable.value
        if (
            not isinstance(grad, torch.Tensor)
            or grad.layout != torch.strided
            or grad.device != value.device
            or str(value.dtype).removeprefix("torch.") not in _FUSED_DTYPES
            or not value.is_contiguous()
        ):
            return False
        if grad.numel():
            storages.add(grad.untyped_storage().data_ptr())
    # Clipping divides the gradients in place: none may share memory.
    return len(storages) == sum(1 for g in grads if g.numel())


def fused_adamw_update(optimizer, grads, trainable_variables):
    """Keras's AdamW update, in place, with `torch._fused_adamw_`.

    Does what `BaseOptimizer._backend_apply_gradients` does without EMA:
    under gradient accumulation, adds the gradients into the accumulators
    and updates only on every `gradient_accumulation_steps`-th batch, with
    their mean; clips (`gradients_to_clip` of `GradientClippingHooks`
    first, then `global_clipnorm`); decays the variables Keras decays by
    `1 - weight_decay * lr`; and takes Keras's Adam step, `m += (g - m) *
    (1 - beta_1)`, `v += (g**2 - v) * (1 - beta_2)`, `p -= lr *
    sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(v) + epsilon)` with
    `t = optimizer.iterations + 1` (updates, not batches, under
    accumulation). Torch's kernel divides `sqrt(v)` by
    `sqrt(1 - beta_2**t)` before adding its epsilon, so it is given
    `epsilon / sqrt(1 - beta_2**t)`. The clipping factor and the mean are
    applied by the kernel as it reads each gradient, which it then
    overwrites with the gradient it used: the gradients passed in are
    scaled in place when clipping or averaging changes them (as
    `torch.nn.utils.clip_grad_norm_` does); accumulators are reset after.

    Args:
        optimizer: `keras.optimizers.AdamW` for which
            `fused_update_applies` holds.
        grads: list of torch tensors, the gradients of `trainable_variables`.
        trainable_variables: list of `keras.Variable`.
    """
    import torch

    with torch.no_grad():
        values = [v.value for v in trainable_variables]
        # Keras casts each gradient to its variable's dtype.
        grads = [
            g
            if g.dtype == p.dtype and g.is_contiguous()
            else g.to(p.dtype).contiguous()
            for g, p in zip(grads, values, strict=True)
        ]
        # Batches seen; `iterations` counts updates under accumulation.
        batches = int(keras.ops.convert_to_numpy(optimizer._iterations))
        steps = optimizer.gradient_accumulation_steps
        scale = 1.0
        if steps:
            accumulators = [
                optimizer._accumulated_gradients[
                    optimizer._get_variable_index(v)
                ].value
                for v in trainable_variables
            ]
            torch._foreach_add_(accumulators, grads)
            if (batches + 1) % steps:
                return
            grads, scale = accumulators, float(steps)
        grads = _gradients_to_clip(optimizer, grads)
        scale = _clipping_scale(optimizer, grads, scale)
        _fused_adamw_step(optimizer, grads, trainable_variables, scale)
        if steps:
            torch._foreach_zero_(
                [
                    a.value
                    for a in optimizer._accumulated_gradients
                    if a is not None
                ]
            )


def _gradients_to_clip(optimizer, grads):
    """`grads` as `GradientClippingHooks.gradients_to_clip` returns them."""
    hook = getattr(optimizer, "gradients_to_clip", None)
    return list(hook(grads)) if hook is not None else grads


def _clipping_scale(optimizer, grads, scale):
    """What to divide `grads` by: `scale`, and the global-norm clip.

    Keras multiplies every gradient by `clip / max(norm, clip)` when the
    global norm of the (averaged) gradients is finite and by NaN otherwise.
    """
    import torch

    clip = optimizer.global_clipnorm
    if not clip or clip <= 0:
        return scale
    norms = torch._foreach_norm(grads)
    norm = float(torch.linalg.vector_norm(torch.stack(norms).double())) / scale
    if not math.isfinite(norm):
        return math.nan
    return scale * max(norm / clip, 1.0)


def _fused_adamw_step(optimizer, grads, trainable_variables, scale):
    """One call of `torch._fused_adamw_` per device, dtype and decay."""
    import torch

    learning_rate = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    weight_decay = float(optimizer.weight_decay or 0.0)
    step = int(keras.ops.convert_to_numpy(optimizer.iterations)) + 1
    beta_1, beta_2 = float(optimizer.beta_1), float(optimizer.beta_2)
    bias_correction_2 = 1.0 - beta_2**step
    groups = {}
    for grad, variable in zip(grads, trainable_variables, strict=True):
        value = variable.value
        if not value.numel():
            continue
        index = optimizer._get_variable_index(variable)
        decay = weight_decay if optimizer._use_weight_decay(variable) else 0.0
        group = groups.setdefault(
            (value.device, value.dtype, decay), ([], [], [], [])
        )
        group[0].append(value)
        group[1].append(grad)
        group[2].append(optimizer._momentums[index].value)
        group[3].append(optimizer._velocities[index].value)
    for (device, _, decay), (values, group_grads, m, v) in groups.items():
        state_step = torch.tensor(
            float(step), dtype=torch.float32, device=device
        )
        grad_scale = None
        if scale != 1.0:
            grad_scale = torch.tensor(scale, dtype=torch.float32, device=device)
        torch._fused_adamw_(
            values,
            group_grads,
            m,
            v,
            [],
            [state_step] * len(values),
            lr=learning_rate,
            beta1=beta_1,
            beta2=beta_2,
            weight_decay=decay,
            eps=float(optimizer.epsilon) / math.sqrt(bias_correction_2),
            amsgrad=False,
            maximize=False,
            grad_scale=grad_scale,
        )


# --- Trainer (TensorFlow): building the model under tf.distribute ---
#
# Replaces: nothing public. Under a `tf.distribute` strategy Keras 3's
# TensorFlow trainer builds the model in `_maybe_symbolic_build` on the
# replicas' mean of a first batch, reduced as one nested value: boolean
# inputs (AIMv2's padding mask) have no mean, and MultiWorkerMirrored-
# Strategy reduces no nested values, so `fit` fails. A model inheriting
# `FirstReplicaSymbolicBuild` builds on the first replica's own batch,
# which describes the inputs as well. The override reads the trainer's
# `_distribute_strategy` (the strategy the model was created under, or
# None; the public `distribute_strategy` falls back to the default one)
# and the epoch iterator's `(begin, end, iterator)` steps as Keras does.


@_hook(
    "keras.Model._maybe_symbolic_build(iterator, data_batch) and "
    "_distribute_strategy of the TensorFlow trainer (AIMV2Pretrainer: "
    "building on one replica's batch)"
)
def _check_maybe_symbolic_build():
    if _backend() != "tensorflow":
        return
    model = keras.Model
    _method(model, "_maybe_symbolic_build", ["self", "iterator", "data_batch"])
    _uses(_method(model, "fit"), "_maybe_symbolic_build")
    trainer = _defining_class(model, "_maybe_symbolic_build")
    _uses(trainer.__init__, "_distribute_strategy")


class FirstReplicaSymbolicBuild:
    """Mixin of a `keras.Model`: build on one replica's batch under TF.

    See the comment above. Nothing changes without a `tf.distribute`
    strategy or on the other backends, which never call this method.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                break
            data_batch = keras.tree.map_structure(
                lambda value: strategy.experimental_local_results(value)[0],
                batch,
            )
            iterator = None
        return super()._maybe_symbolic_build(
            iterator=iterator, data_batch=data_batch
        )


# --- Variables: their values under the JAX trainer ---
#
# Replaces: nothing public. Keras 3's JAX trainer takes the variables'
# values out of them during `fit` and `evaluate` and puts the last step's
# back at the end; `variable.value` then returns a placeholder (the
# initializer's output), not "empty". `variables_kept_on_failure` reads
# `variable._value` to tell which variables a failed call left empty and
# to keep the arrays they held before it. `jax_state_sync` is public.


@_hook(
    "keras.Variable._value, the array `variable.value` returns, and "
    "keras.Model.jax_state_sync on JAX (variables_kept_on_failure)"
)
def _check_variable_value():
    _uses(keras.Variable.value.fget, "_value")
    if _backend() == "jax":
        _method(keras.Model, "jax_state_sync", ["self"])


@contextlib.contextmanager
def variables_kept_on_failure(model):
    """Keep `model`'s variables usable when `fit` or `evaluate` raises.

    Keras 3.15's JAX trainer takes the variables' values out of them during
    `fit` and `evaluate` (`_purge_model_variables`) and puts the last
    step's values back at the end; when a step raises (a bad batch, an
    interrupt), `evaluate` puts nothing back and `fit` nothing before its
    first step completes, so the variables are left empty. Here, on an
    exception, the last completed step's state is put back
    (`jax_state_sync`) and every variable still empty gets the value it
    had before the call, which no step has consumed. Other backends update
    variables in place.

    On every backend, a failure also drops the compiled step functions
    (`train_function`, `test_function`, `predict_function`, which
    `make_train_function` and its siblings rebuild when they are `None`):
    a TensorFlow step that failed while it was first traced keeps the
    optimizer unbuilt, and the same `tf.function` may not create its
    variables on a later call.

    Args:
        model: `keras.Model`. The model whose `fit` or `evaluate` runs in
            the context.
    """
    if keras.config.backend() != "jax":
        try:
            yield
        except BaseException:
            _drop_step_functions(model)
            raise
        return
    variables = list(model.variables)
    # An uncompiled model has no `optimizer` (and `fit` will say so).
    if getattr(model, "optimizer", None) is not None:
        # Built now rather than inside the call, as `fit` would build it,
        # so that its variables' initial values are kept too.
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        variables += list(model.optimizer.variables)
    before = [variable._value for variable in variables]
    try:
        yield
    except BaseException:
        model.jax_state_sync()
        _drop_step_functions(model)
        for variable, value in zip(variables, before, strict=True):
            if variable._value is None and not value.is_deleted():
                variable.assign(value)
        raise


class VariablesKeptOnFailure:
    """A model mixin: `fit` and `evaluate` under `variables_kept_on_failure`.

    If either raises, the weights stay those of the last completed step,
    on every backend, so that an interrupted run can save them.
    """

    def fit(self, *args, **kwargs):
        """Keras's `fit`; if it raises, the weights stay those of the last
        completed step (`variables_kept_on_failure`)."""
        with variables_kept_on_failure(self):
            return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        """Keras's `evaluate`; if it raises, the weights stay usable."""
        with variables_kept_on_failure(self):
            return super().evaluate(*args, **kwargs)


def _drop_step_functions(model):
    """Make the next `fit`, `evaluate` or `predict` compile afresh."""
    model.train_function = None
    model.test_function = None
    model.predict_function = None


# --- Layer: a weight replaced by one of another shape ---
#
# Replaces: nothing public. A Keras layer cannot drop a weight or add one
# once it is built: `Layer._untrack_variable(variable)` removes a weight
# from the layer's lists, and its `_tracker` (locked after `build`) must be
# unlocked for `add_weight` to register the new one.
# AIMV2ZeroShotClassifier's class embeddings change shape with the number
# of classes (`set_classes`).


@_hook(
    "keras.layers.Layer._untrack_variable(variable) and its `_tracker` "
    "(lock, unlock, locked) (AIMV2ZeroShotClassifier.set_classes)"
)
def _check_replace_weight():
    _method(keras.layers.Layer, "_untrack_variable", ["self", "variable"])
    tracker = _method(keras.layers.Layer, "_initialize_tracker")
    _uses(tracker, "_tracker")
    for name in ("lock", "unlock"):
        _uses(_method(keras.src.utils.tracking.Tracker, name), "locked")


def replace_weight(layer, old, name, shape):
    """A new non-trainable weight of `layer` in place of `old`.

    Args:
        layer: the `keras.layers.Layer` (or model) holding `old`.
        old: `keras.Variable` or `None`. The weight to drop.
        name: str. Name of the new weight.
        shape: tuple. Its shape.

    Returns:
        The new weight (zeros). Compiled steps, which captured the old
        weight or its shape, are dropped.
    """
    if old is not None:
        layer._untrack_variable(old)
    tracker = layer._tracker
    locked = tracker.locked
    tracker.unlock()
    try:
        weight = layer.add_weight(
            name=name, shape=shape, initializer="zeros", trainable=False
        )
    finally:
        if locked:
            tracker.lock()
    _drop_step_functions(layer)
    return weight


# --- Tokenizer: special tokens that follow the vocabulary ---
#
# Replaces: nothing public. keras-hub tokenizers declare their special
# tokens with `Tokenizer._add_special_token(token, name)`, which makes
# `<name>_id` and `special_token_ids` follow the vocabulary, and recompute
# the ids in `_update_special_token_ids`, which `SentencePieceTokenizer`
# calls each time a proto is set (also when a preset's assets are loaded,
# after construction). AIMV2Tokenizer's end and pad tokens default to the
# pieces the proto declares, so they can only be resolved there.


@_hook(
    "keras_hub.tokenizers.Tokenizer._add_special_token(token, name) and "
    "_update_special_token_ids(), called by SentencePieceTokenizer.set_proto "
    "(AIMV2Tokenizer: end and pad tokens from the proto)"
)
def _check_special_tokens():
    tokenizer = keras_hub.tokenizers.Tokenizer
    _method(tokenizer, "_add_special_token", ["self", "token", "name"])
    _method(tokenizer, "_update_special_token_ids", ["self"])
    _uses(
        keras_hub.tokenizers.SentencePieceTokenizer.set_proto,
        "_update_special_token_ids",
    )


class SpecialTokens:
    """Mixin of a keras-hub tokenizer: special tokens set by the vocabulary.

    `declare_special_token(token, name)` makes `name`, `<name>_id` and
    `special_token_ids` follow the vocabulary; override
    `resolve_special_tokens` to set the tokens' attributes (e.g.
    `self.end_token`) from a new vocabulary before their ids are looked
    up in it.
    """

    def declare_special_token(self, token, name):
        """Declare the special token `token`, kept in attribute `name`.

        Args:
            token: str or `None`. The token; `None` until
                `resolve_special_tokens` sets it.
            name: str. The attribute, e.g. `"end_token"`; its id is kept in
                `"<name>_id"`.
        """
        self._add_special_token(token, name)

    def resolve_special_tokens(self):
        """Set the special tokens' attributes for the vocabulary just set.

        Called each time a vocabulary is set, before the tokens' ids are
        looked up in it. This default changes nothing.
        """

    def _update_special_token_ids(self):
        self.resolve_special_tokens()
        super()._update_special_token_ids()


# --- PyTorch: a keras-hub model's parameters as torch sees them ---
#
# Replaces: nothing public. On PyTorch a Keras layer is a `torch.nn.Module`
# whose `parameters()` come from a `ParameterDict` it makes after building
# (`Layer._track_variables`). keras-hub's functional models set attributes
# with `object.__setattr__` until they are initialized, so that dict is
# not registered as a submodule and `parameters()` is empty: PyTorch's
# `DistributedDataParallel` then refuses the model. `Layer._track_variables`
# made again once the model is initialized registers it.


@_hook("keras.layers.Layer._track_variables on PyTorch (DDP's parameters)")
def _check_track_variables():
    if _backend() == "torch":
        _method(keras.layers.Layer, "_track_variables", ["self"])


def register_torch_parameters(model):
    """Make `model.parameters()` list its variables, on PyTorch.

    Args:
        model: a built `keras.Model`.

    Returns:
        `model`.
    """
    if _backend() == "torch" and not any(True for _ in model.parameters()):
        model._track_variables()
    return model


# --- Preprocessor: arguments of a preset that holds no preprocessor ---
#
# Replaces: nothing public. keras-hub builds a preprocessor from a preset
# without `preprocessor.json` (a bare backbone preset) from the keyword
# arguments `Preprocessor._add_missing_kwargs(loader, kwargs)` fills in,
# given the preset loader (`loader.preset`, `loader.config`).
# AIMV2ImageClassifierPreprocessor builds its image converter at the
# backbone's image size there when the preset holds none.


@_hook(
    "keras_hub.models.Preprocessor._add_missing_kwargs(loader, kwargs), "
    "called by the preset loader with its `preset` and `config` "
    "(AIMV2ImageClassifierPreprocessor: a converter for backbone presets)"
)
def _check_add_missing_kwargs():
    _method(
        keras_hub.models.Preprocessor,
        "_add_missing_kwargs",
        ["loader", "kwargs"],
    )
    loader = _preset_utils_attribute("PresetLoader")
    _uses(_method(loader, "load_preprocessor"), "_add_missing_kwargs")
    _uses(loader.__init__, "preset")
    _uses(loader.__init__, "config")


class PresetArguments:
    """Mixin of a keras-hub preprocessor: arguments a preset lacks.

    Override `preset_arguments` to add keyword arguments when the
    preprocessor is built from a preset that does not hold one.
    """

    @classmethod
    def preset_arguments(cls, preset, config, kwargs):
        """Keyword arguments of a preprocessor built from a bare preset.

        Args:
            preset: str. The preset (a directory or a handle).
            config: dict. The preset's `config.json` (the backbone's).
            kwargs: dict. The arguments so far.

        Returns:
            The dict of arguments; keras-hub then fills in the tokenizer
            and converters still missing. This default returns `kwargs`.
        """
        return kwargs

    @classmethod
    def _add_missing_kwargs(cls, loader, kwargs):
        kwargs = cls.preset_arguments(loader.preset, loader.config, kwargs)
        return super()._add_missing_kwargs(loader, kwargs)


# --- Preset files ---
#
# keras-hub's preset format names its files in `preset_utils`, which its
# public API does not export; these are our own copies, checked at import
# to equal keras-hub's. Reading a file of a preset that is not a local
# directory (a `kaggle://` or `hf://` handle) needs keras-hub's download
# and cache (`check_file_exists`, `load_json`), which no public API offers
# either; local directories are read here directly.
CONFIG_FILE = "config.json"
TASK_CONFIG_FILE = "task.json"
IMAGE_CONVERTER_CONFIG_FILE = "image_converter.json"
MODEL_WEIGHTS_FILE = "model.weights.h5"
SHARDED_MODEL_WEIGHTS_CONFIG_FILE = "model.weights.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
_PRESET_FILES = {
    "CONFIG_FILE": CONFIG_FILE,
    "TASK_CONFIG_FILE": TASK_CONFIG_FILE,
    "IMAGE_CONVERTER_CONFIG_FILE": IMAGE_CONVERTER_CONFIG_FILE,
    "MODEL_WEIGHTS_FILE": MODEL_WEIGHTS_FILE,
    "SHARDED_MODEL_WEIGHTS_CONFIG_FILE": SHARDED_MODEL_WEIGHTS_CONFIG_FILE,
    "TASK_WEIGHTS_FILE": TASK_WEIGHTS_FILE,
}


def _preset_utils_attribute(name):
    if _preset_utils is None:
        raise _HookMissing("keras_hub.src.utils.preset_utils does not exist")
    if not hasattr(_preset_utils, name):
        raise _HookMissing(f"keras_hub.src.utils.preset_utils has no `{name}`")
    return getattr(_preset_utils, name)


@_hook(
    "keras_hub.src.utils.preset_utils: the preset file names, "
    "check_file_exists(preset, path) and load_json(preset, config_file) "
    "(reading presets that are not local directories)"
)
def _check_preset_files():
    for name, value in _PRESET_FILES.items():
        theirs = _preset_utils_attribute(name)
        if theirs != value:
            raise _HookMissing(
                f"keras-hub names its {name} {theirs!r}, not {value!r}"
            )
    for name, parameters in (
        ("check_file_exists", ["preset", "path"]),
        ("load_json", ["preset", "config_file"]),
    ):
        _preset_utils_attribute(name)
        _method(_preset_utils, name, parameters)


# --- Preprocessors: keras-hub's input and output conversion ---
#
# Replaces: nothing public. keras-hub's own preprocessors decorate `call`
# with `keras_hub.src.utils.tensor_utils.preprocessing_function`: inputs
# become TensorFlow tensors where preprocessing needs them (strings), the
# body runs in TensorFlow, and outputs come back as the backend's tensors,
# or NumPy inside a Grain pipeline. keras-hub exports no public name for it.


@_hook(
    "keras_hub.src.utils.tensor_utils.preprocessing_function, the "
    "decorator of keras-hub preprocessors' `call`"
)
def _check_preprocessing_function():
    if _tensor_utils is None:
        raise _HookMissing("keras_hub.src.utils.tensor_utils does not exist")
    if not callable(getattr(_tensor_utils, "preprocessing_function", None)):
        raise _HookMissing(
            "keras_hub.src.utils.tensor_utils has no `preprocessing_function`"
        )


def preprocessing_function(function):
    """keras-hub's decorator of a preprocessor's `call` (see above)."""
    return _tensor_utils.preprocessing_function(function)


def _local_directory(preset):
    return isinstance(preset, (str, os.PathLike)) and os.path.isdir(preset)


def check_file_exists(preset, path):
    """Whether the preset `preset` holds the file `path`.

    Args:
        preset: str. A preset directory or handle.
        path: str. A file name of the preset format, e.g. `TASK_CONFIG_FILE`.

    Returns:
        bool.
    """
    if _local_directory(preset):
        return os.path.isfile(os.path.join(preset, path))
    return _preset_utils.check_file_exists(preset, path)


def load_json(preset, config_file=CONFIG_FILE):
    """The contents of the JSON file `config_file` of the preset `preset`.

    Args:
        preset: str. A preset directory or handle.
        config_file: str. A file name of the preset format. Defaults to
            `CONFIG_FILE`.

    Returns:
        The decoded JSON value.
    """
    if _local_directory(preset):
        with open(os.path.join(preset, config_file), encoding="utf-8") as file:
            return json.load(file)
    return _preset_utils.load_json(preset, config_file)


def check_config_class(config):
    """The class a serialized preset config (`config.json`, ...) names.

    Our own code on public API (`keras.saving.get_registered_object`),
    doing what keras-hub's private helper of the same name does.

    Args:
        config: dict. A serialized Keras object with `"registered_name"`.

    Returns:
        The registered class (`keras.Model` for functional models).

    Raises:
        ValueError: when no class is registered under that name.
    """
    registered_name = config["registered_name"]
    if registered_name in ("Functional", "Sequential"):
        return keras.Model
    cls = keras.saving.get_registered_object(registered_name)
    if cls is None:
        raise ValueError(
            f"The preset names the class {registered_name!r}, which is not "
            "registered with Keras: import the package that defines it "
            "(e.g. `import keras_aimv2`) before loading the preset."
        )
    return cls


# --- JAX: whether XLA has read `XLA_FLAGS` ---
#
# Replaces: nothing public. JAX reads `XLA_FLAGS` once, when it starts its
# backends (the CPU client); `keras_aimv2.xla_cpu.configure` only changes
# the variable while that has not happened, and JAX's public API has no
# question for it (`jax.devices()` would start them).


@_hook(
    "jax._src.xla_bridge.backends_are_initialized() (whether JAX has read "
    "XLA_FLAGS yet, keras_aimv2.xla_cpu)",
    tested=f"{TESTED}, {TESTED_JAX}",
)
def _check_jax_backends_initialized():
    jax = sys.modules.get("jax")
    if jax is None:  # checked when JAX is imported, as the JAX backend does
        return
    try:
        from jax._src import xla_bridge

        _method(xla_bridge, "backends_are_initialized", [])
    except (ImportError, _HookMissing) as missing:
        raise _HookMissing(f"jax {jax.__version__}: {missing}") from None


def jax_backends_initialized():
    """Whether JAX has started its backends, and so read `XLA_FLAGS`.

    Returns:
        bool. `False` when JAX has not been imported.

    Raises:
        IncompatibleVersionError: when the installed JAX lacks the hook.
    """
    if "jax" not in sys.modules:
        return False
    # JAX may be imported after this module: checked here as well.
    (hook,) = [h for h in _HOOKS if h[1] is _check_jax_backends_initialized]
    _check_hook(*hook)
    from jax._src import xla_bridge

    return bool(xla_bridge.backends_are_initialized())


def check_hooks():
    """Raise unless every hook of this module exists in the installed APIs.

    Raises:
        IncompatibleVersionError: naming the first missing hook, what was
            found instead, the installed versions and the tested range.
    """
    for description, check, tested in _HOOKS:
        _check_hook(description, check, tested)


def _check_hook(description, check, tested):
    """Run one check of `_HOOKS`; the clear error if it fails."""
    try:
        check()
    except _HookMissing as missing:
        raise _incompatible(
            f"it relies on {description}, which the installed version "
            f"lacks or has changed ({missing})",
            tested=tested,
        ) from None


def check_compatibility():
    """Check the versions' range, then every hook (`import` runs this).

    Raises:
        IncompatibleVersionError: naming what is missing or out of range.
    """
    check_versions()
    check_hooks()


check_compatibility()
