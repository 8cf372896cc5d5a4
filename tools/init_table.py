"""Initial parameters of an AIMv2 pre-training model against Apple's rules.

Builds a pre-training model (by default AIMv2-L with the paper's decoder)
on the backend of `KERAS_BACKEND` and prints, for every parameter family,
the rule of Apple's trainer (ml-l3m, `configs/aimv2/001_aimv2_hfdata.yaml`),
the standard deviation and bound it implies, and the standard deviation,
mean and largest magnitude measured over the family's values, all blocks
together. The expectations are written here from the trainer's rules,
independently of the layers that draw the values.

    python tools/init_table.py                        # AIMv2-L, paper decoder
    python tools/init_table.py --size base --decoder tiny --seed 1
"""

import argparse
import math
import re
import sys

import keras
import numpy as np

import keras_aimv2
from keras_aimv2 import xla_cpu

# Standard deviation of a standard normal truncated at +-2: timm's
# truncated `variance_scaling_` divides by it, so that the values keep the
# variance it names.
TRUNCATED_NORMAL_STD = 0.87962566103423978


def uniform(rule, bound):
    """Expectation of `U(-bound, bound)`."""
    return {
        "rule": rule,
        "distribution": "uniform",
        "std": bound / math.sqrt(3.0),
        "mean": 0.0,
        "bound": bound,
    }


def xavier(fan_in, fan_out):
    """`xavier_uniform_` of one separate `fan_in -> fan_out` map."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform(f"xavier_uniform {fan_in}->{fan_out}", bound)


def torch_default(what, fan_in):
    """PyTorch's default linear or convolution weight or bias."""
    return uniform(f"torch default {what}, U(+-1/sqrt({fan_in}))", fan_in**-0.5)


def normal(std):
    """`normal_`: `N(0, std**2)`, not truncated."""
    return {
        "rule": f"N(0, {std}^2)",
        "distribution": "normal",
        "std": std,
        "mean": 0.0,
        "bound": None,
    }


def head(fan_in, decoder_num_layers):
    """timm's truncated `variance_scaling_`, scale `1 / (1 + depth)`."""
    scale = 1.0 / (1 + decoder_num_layers)
    std = math.sqrt(scale / fan_in)
    return {
        "rule": f"trunc. normal, fan_in, scale 1/{1 + decoder_num_layers}",
        "distribution": "truncated_normal",
        "std": std,
        "mean": 0.0,
        "bound": 2.0 * std / TRUNCATED_NORMAL_STD,
    }


ONES = {
    "rule": "ones",
    "distribution": "constant",
    "std": 0.0,
    "mean": 1.0,
    "bound": 1.0,
}


def columns(index, parts):
    """Selects block `index` of `parts` equal blocks of the last axis."""

    def select(value):
        width = value.shape[-1] // parts
        return value[..., index * width : (index + 1) * width]

    return select


def trunk_families(prefix, label, width, hidden):
    """The families of an encoder or decoder stack of blocks."""
    block = rf"{prefix}/block_\d+"
    qkv = rf"{block}/attention/qkv/kernel"
    gate_up = rf"{block}/feed_forward/gate_up/kernel"
    return [
        (f"{label} query", qkv, columns(0, 3), xavier(width, width)),
        (f"{label} key", qkv, columns(1, 3), xavier(width, width)),
        (f"{label} value", qkv, columns(2, 3), xavier(width, width)),
        (
            f"{label} attention output",
            rf"{block}/attention/output_projection/kernel",
            None,
            xavier(width, width),
        ),
        (f"{label} gate", gate_up, columns(0, 2), xavier(width, hidden)),
        (f"{label} up", gate_up, columns(1, 2), xavier(width, hidden)),
        (
            f"{label} down",
            rf"{block}/feed_forward/down/kernel",
            None,
            xavier(hidden, width),
        ),
        (
            f"{label} RMSNorm gains",
            rf"{prefix}/(block_\d+/(attention|feed_forward)_norm|final_norm)"
            r"/scale",
            None,
            ONES,
        ),
    ]


def families(backbone_config, decoder_config):
    """`(name, path pattern, selection, expectation)` of every family."""
    width = backbone_config["hidden_dim"]
    patch_dim = backbone_config["patch_size"] ** 2
    patch_dim *= backbone_config["image_shape"][-1]
    decoder_width = decoder_config["decoder_hidden_dim"]
    depth = decoder_config["decoder_num_layers"]
    return [
        (
            "patch projection kernel",
            "patch_embedding/projection/kernel",
            None,
            xavier(patch_dim, width),
        ),
        (
            "patch projection bias",
            "patch_embedding/projection/bias",
            None,
            torch_default("conv bias", patch_dim),
        ),
        (
            "patch position embedding",
            "patch_embedding/position_embedding",
            None,
            normal(0.02),
        ),
        ("patch RMSNorm gain", "patch_embedding/norm/scale", None, ONES),
        *trunk_families(
            "encoder", "encoder", width, backbone_config["intermediate_dim"]
        ),
        (
            "decoder image projection kernel",
            "decoder/image_projection/kernel",
            None,
            torch_default("linear weight", width),
        ),
        (
            "decoder image projection bias",
            "decoder/image_projection/bias",
            None,
            torch_default("linear bias", width),
        ),
        (
            "decoder token embedding",
            "decoder/token_embedding/embeddings",
            None,
            normal(0.02),
        ),
        ("decoder BOS token", "decoder/bos_token", None, normal(0.02)),
        (
            "decoder text position embedding",
            "decoder/position_embedding",
            None,
            normal(0.01),
        ),
        *trunk_families(
            "decoder",
            "decoder",
            decoder_width,
            decoder_config["decoder_intermediate_dim"],
        ),
        (
            "pixel head",
            "pixel_head/dense/kernel",
            None,
            head(decoder_width, depth),
        ),
        (
            "text head",
            "text_head/dense/kernel",
            None,
            head(decoder_width, depth),
        ),
    ]


def build_pretrainer(backbone_config, decoder_config, seed=0):
    """A freshly initialised `AIMV2Pretrainer`, seeded."""
    keras.utils.set_random_seed(seed)
    backbone = keras_aimv2.AIMV2Backbone(**backbone_config)
    return keras_aimv2.AIMV2Pretrainer(backbone, **decoder_config)


def measure_rows(values, backbone_config, decoder_config):
    """One row per family: its expectation and its measured statistics.

    Args:
        values: dict of every trainable weight of an `AIMV2Pretrainer`
            built from the two configs, by path (`weights_by_path`); the
            values may be variables or arrays.
        backbone_config: dict of `AIMV2Backbone` arguments.
        decoder_config: dict of the pretrainer's decoder arguments.

    Returns:
        A list of dicts with `family`, `rule`, `distribution` (`"uniform"`,
        `"normal"`, `"truncated_normal"` or `"constant"`), `count`,
        `expected_std`, `expected_mean`, `bound` (`None` for an untruncated
        normal), `std`, `mean` and `max_abs`, for the families that the
        model holds.

    Raises:
        ValueError: when a weight belongs to no family.
    """
    covered = set()
    rows = []
    for name, pattern, select, expected in families(
        backbone_config, decoder_config
    ):
        count, total, squares, max_abs = 0, 0.0, 0.0, 0.0
        for path, variable in values.items():
            if not re.fullmatch(pattern, path):
                continue
            covered.add(path)
            value = keras.ops.convert_to_numpy(variable).astype(np.float64)
            if select is not None:
                value = select(value)
            count += value.size
            total += value.sum()
            squares += np.square(value).sum()
            max_abs = max(max_abs, float(np.abs(value).max()))
        if not count:
            continue
        mean = total / count
        rows.append(
            {
                "family": name,
                "rule": expected["rule"],
                "distribution": expected["distribution"],
                "count": count,
                "expected_std": expected["std"],
                "expected_mean": expected["mean"],
                "bound": expected["bound"],
                "std": math.sqrt(max(squares / count - mean**2, 0.0)),
                "mean": mean,
                "max_abs": max_abs,
            }
        )
    missing = sorted(set(values) - covered)
    if missing:
        raise ValueError(f"Weights of no family: {missing}")
    return rows


def weights_by_path(model):
    """The trainable weights of `model`, by path."""
    return {v.path: v for v in model.trainable_weights}


def init_rows(backbone_config, decoder_config, seed=0):
    """Build a seeded model from the configs and measure every family."""
    model = build_pretrainer(backbone_config, decoder_config, seed)
    return measure_rows(weights_by_path(model), backbone_config, decoder_config)


def markdown(rows):
    lines = [
        "| parameter | rule | values | expected std | bound | std "
        "| std / expected | mean | max abs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        bound = "-" if row["bound"] is None else f"{row['bound']:.5f}"
        ratio = "-"
        if row["expected_std"]:
            ratio = f"{row['std'] / row['expected_std']:.4f}"
        lines.append(
            f"| {row['family']} | {row['rule']} | {row['count']:,} "
            f"| {row['expected_std']:.5f} | {bound} | {row['std']:.5f} "
            f"| {ratio} | {row['mean']:+.5f} | {row['max_abs']:.5f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    # Before JAX starts: its XLA:CPU tuning on a CPU host, as `aimv2
    # pretrain` makes it (keras_aimv2/xla_cpu.py).
    xla_cpu.configure()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--size",
        default="large",
        choices=sorted(keras_aimv2.BACKBONE_CONFIGS),
        help="Encoder size. Defaults to AIMv2-L.",
    )
    parser.add_argument(
        "--decoder",
        default="aimv2",
        choices=sorted(keras_aimv2.DECODER_CONFIGS),
        help="Decoder configuration. Defaults to the paper's.",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = init_rows(
        keras_aimv2.BACKBONE_CONFIGS[args.size],
        keras_aimv2.DECODER_CONFIGS[args.decoder],
        args.seed,
    )
    print(
        f"Encoder {args.size!r}, decoder {args.decoder!r}, seed {args.seed}, "
        f"backend {keras.config.backend()}."
    )
    print()
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
