"""Initialisers of AIMv2's parameters, as Apple's pre-training code sets them.

Apple's trainer (ml-l3m, AIMv2 configuration) initialises each module
innermost first: where a module's own `init_weights` sets nothing,
PyTorch's defaults (`reset_parameters`) stay. Each function or class here
is one of its rules as a Keras initialiser, seeded, like any other, by
`keras.utils.set_random_seed`; the layers say which rule each of their
parameters follows, and RMSNorm gains start at one.

- `XavierUniform`: every linear map of the encoder and decoder blocks
  (query, key, value, attention output, gate, up, down) and the patch
  projection's kernel.
- `torch_linear_kernel` and `torch_linear_bias`: a layer left at PyTorch's
  `nn.Linear` or `nn.Conv2d` default (the decoder's projection of the
  encoder features, the patch projection's bias).
- `head_kernel` (a `TruncatedFanInNormal`): the pixel and text heads.
- `normal`: position embeddings, token embedding and BOS token.
"""

import math

import keras

from keras_aimv2.api import register


@register
class XavierUniform(keras.initializers.RandomUniform):
    """Xavier-uniform for a kernel that fuses `num_kernels` linear maps.

    A kernel `(fan_in, num_kernels * fan_out)` holding `num_kernels`
    separate `fan_in -> fan_out` maps side by side (`[q | k | v]`,
    `[gate | up]`) is drawn from `U(-b, b)`, `b = sqrt(6 / (fan_in +
    fan_out))`: each block of `fan_out` columns is then exactly
    `torch.nn.init.xavier_uniform_` of one separate map, not of the fused
    matrix. With `num_kernels=1` this is `glorot_uniform`.

    Args:
        num_kernels: int. Number of maps fused along the last axis.
            Defaults to `1`.
        seed: int, `keras.random.SeedGenerator` or `None`. Defaults to
            `None`, a seed drawn from Keras's global seed.

    Example:

    >>> kernel = XavierUniform(num_kernels=3)((64, 192))
    >>> bool(keras.ops.max(keras.ops.abs(kernel)) <= (6 / 128) ** 0.5)
    True
    """

    def __init__(self, num_kernels=1, seed=None):
        super().__init__(seed=seed)
        self.num_kernels = num_kernels

    def __call__(self, shape, dtype=None):
        if len(shape) != 2 or shape[-1] % self.num_kernels:
            raise ValueError(
                f"XavierUniform(num_kernels={self.num_kernels}) needs a 2D "
                "kernel whose last axis splits into that many maps. "
                f"Received: shape={tuple(shape)}"
            )
        fan_out = shape[-1] // self.num_kernels
        bound = math.sqrt(6.0 / (shape[0] + fan_out))
        return keras.random.uniform(
            shape, minval=-bound, maxval=bound, dtype=dtype, seed=self.seed
        )

    def get_config(self):
        return {
            "num_kernels": self.num_kernels,
            "seed": super().get_config()["seed"],
        }


def torch_linear_kernel():
    """PyTorch's default linear or convolution weight: `U(-b, b)`.

    `kaiming_uniform_(a=sqrt(5))` gives `b = 1 / sqrt(fan_in)`, where
    `fan_in` is the kernel's first axis (a flattened patch for a
    convolution).
    """
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform"
    )


def torch_linear_bias(fan_in):
    """PyTorch's default linear or convolution bias: `U(-b, b)`.

    Args:
        fan_in: int. Inputs of the layer; `b = 1 / sqrt(fan_in)`.
    """
    bound = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(minval=-bound, maxval=bound)


# A standard normal truncated at +-2 keeps this share of its mass, and has
# this standard deviation.
_TRUNCATED_MASS = math.erf(2.0 / math.sqrt(2.0))
_TRUNCATED_STD = math.sqrt(
    1.0 - 4.0 * math.exp(-2.0) / math.sqrt(2.0 * math.pi) / _TRUNCATED_MASS
)


@register
class TruncatedFanInNormal(keras.initializers.VarianceScaling):
    """timm's `variance_scaling_(scale, "fan_in", "truncated_normal")`.

    A normal of standard deviation `sqrt(scale / fan_in) / 0.8796...`,
    truncated at two of them, so that the values have variance `scale /
    fan_in` (`fan_in`: every axis of the kernel but the last). It is drawn
    by inverting the distribution function of a uniform draw, so that no
    value lies past the bound on any backend (Keras's PyTorch truncated
    normal keeps a few in a million).

    Args:
        scale: float. Variance times `fan_in`. Defaults to `1.0`.
        seed: int, `keras.random.SeedGenerator` or `None`. Defaults to
            `None`, a seed drawn from Keras's global seed.

    Example:

    >>> kernel = TruncatedFanInNormal(scale=0.5)((100, 10))
    >>> bool(keras.ops.max(keras.ops.abs(kernel)) <= 2 * 0.005**0.5 / 0.8796)
    True
    """

    def __init__(self, scale=1.0, seed=None):
        super().__init__(
            scale=scale,
            mode="fan_in",
            distribution="truncated_normal",
            seed=seed,
        )

    def __call__(self, shape, dtype=None):
        fan_in = math.prod(shape[:-1])
        stddev = math.sqrt(self.scale / fan_in) / _TRUNCATED_STD
        # The standard normal's quantile of `(1 + u) / 2` is
        # `sqrt(2) * erfinv(u)`; `u` spans the two truncation points.
        u = keras.random.uniform(
            shape,
            minval=-_TRUNCATED_MASS,
            maxval=_TRUNCATED_MASS,
            dtype="float32",
            seed=self.seed,
        )
        x = keras.ops.erfinv(u) * (math.sqrt(2.0) * stddev)
        x = keras.ops.clip(x, -2.0 * stddev, 2.0 * stddev)
        return keras.ops.cast(x, dtype or keras.config.floatx())

    def get_config(self):
        config = super().get_config()
        return {"scale": config["scale"], "seed": config["seed"]}


def head_kernel(decoder_num_layers):
    """The pixel and text heads' kernel, scaled down by the decoder depth.

    `TruncatedFanInNormal` with `scale = 1 / (1 + decoder_num_layers)`:
    values of standard deviation `sqrt(scale / fan_in)`.

    Args:
        decoder_num_layers: int. Blocks of the decoder the head reads.
    """
    return TruncatedFanInNormal(scale=1.0 / (1 + decoder_num_layers))


def normal(stddev):
    """`torch.nn.init.normal_`: `N(0, stddev**2)`, not truncated.

    Args:
        stddev: float. The standard deviation.
    """
    return keras.initializers.RandomNormal(mean=0.0, stddev=stddev)
