"""Per-device memory of AIMv2 pre-training weights under each strategy.

Builds each pre-training model (encoder, the paper's decoder, heads,
32,000-token vocabulary) on PyTorch's meta device, which allocates
nothing, and sums what one device holds under each layout of
`keras_aimv2.distribution` (`per_device_bytes`): the float32 weights, their
float32 gradients and AdamW's two float32 moments. `mixed_bfloat16` keeps
float32 weights, so the figures hold for it too; activations come on top.

    python tools/memory_table.py                      # L, 1B, 3B
    python tools/memory_table.py --sizes large --model-axes 4 8
"""

import argparse
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

GIB = 2**30


def memory_rows(sizes, model_axes):
    """One row per (size, strategy): GiB of weights, gradients, AdamW."""
    import keras

    import keras_aimv2
    from keras_aimv2.distribution import per_device_bytes

    rows = []
    for size in sizes:
        decoder = keras_aimv2.DECODER_CONFIGS[
            "tiny" if size == "tiny" else "aimv2"
        ]
        with keras.device("meta"):
            backbone = keras_aimv2.AIMV2Backbone(
                **keras_aimv2.BACKBONE_CONFIGS[size]
            )
            model = keras_aimv2.AIMV2Pretrainer(backbone, **decoder)
        layouts = [("none / data_parallel", "none", None)] + [
            (f"sharded, model axis {n}", "sharded", (1, n)) for n in model_axes
        ]
        for name, strategy, mesh in layouts:
            held = per_device_bytes(model, strategy, mesh, optimizer_slots=1)
            weights, moment = held["parameters"], held["optimizer"]
            rows.append(
                {
                    "size": size,
                    "parameters": model.count_params(),
                    "strategy": name,
                    "weights_gib": weights / GIB,
                    "gradients_gib": moment / GIB,
                    "adamw_gib": 2 * moment / GIB,
                    "total_gib": (weights + 3 * moment) / GIB,
                }
            )
    return rows


def markdown(rows):
    lines = [
        "| model | parameters | strategy | weights GiB | gradients GiB "
        "| AdamW GiB | total GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size']} | {row['parameters'] / 1e9:.2f}B "
            f"| {row['strategy']} | {row['weights_gib']:.2f} "
            f"| {row['gradients_gib']:.2f} | {row['adamw_gib']:.2f} "
            f"| {row['total_gib']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["large", "1b", "3b"])
    parser.add_argument(
        "--model-axes",
        nargs="+",
        type=int,
        default=[8, 64],
        help="Devices on the model axis of the sharded layouts.",
    )
    args = parser.parse_args(argv)
    for n in args.model_axes:
        if n < 2:
            parser.error(f"--model-axes must be >= 2. Received: {n}")
    print(markdown(memory_rows(args.sizes, args.model_axes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
