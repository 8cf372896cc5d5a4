"""The Keras internals this package relies on, checked against one version.

Public Keras API is used everywhere else. What is here reads or works
around private behaviour of the Keras version named in `TESTED_KERAS`; a
newer Keras may change it, so `check_keras_version` warns once when
another version runs.
"""

import contextlib
import warnings

import keras

# Major.minor versions of Keras whose internals this module was checked on.
TESTED_KERAS = ("3.15",)
_warned = []


def check_keras_version():
    """Warn once if this Keras is not one `TESTED_KERAS` names."""
    version = keras.version()
    if _warned or version.startswith(TESTED_KERAS):
        return
    _warned.append(version)
    warnings.warn(
        f"keras_aimv2 relies on Keras internals checked on Keras "
        f"{', '.join(TESTED_KERAS)}; this is Keras {version}. If training "
        "misbehaves, install a tested version.",
        stacklevel=2,
    )


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
    variables in place and need nothing.
    """
    if keras.config.backend() != "jax":
        yield
        return
    check_keras_version()
    variables = list(model.variables)
    if model.optimizer is not None:
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
        for variable, value in zip(variables, before, strict=True):
            if variable._value is None and not value.is_deleted():
                variable.assign(value)
        raise
