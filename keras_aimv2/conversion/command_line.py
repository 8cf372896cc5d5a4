"""`aimv2 convert`: convert a checkpoint into a keras-hub preset."""

import argparse
import sys

from keras_aimv2.conversion.errors import CheckpointError
from keras_aimv2.conversion.preset_writer import convert_checkpoint
from keras_aimv2.models.aimv2_presets import backbone_presets


def main(argv=None, prog="aimv2 convert"):
    """Command line: convert a checkpoint into a keras-hub preset.

    Args:
        argv: list of str or `None`. The arguments, without the program
            name; `None` reads `sys.argv`. Defaults to `None`.
        prog: str. The name of the command in usage and error messages.
            Defaults to `"aimv2 convert"`.

    Returns:
        The exit status: 0 on success, 1 with a message on stderr when the
        checkpoint cannot be converted.

    Example:

    >>> main(["model.safetensors", "presets/aimv2_large"])  # doctest: +SKIP
    0
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Convert a released AIMv2 checkpoint (safetensors; Apple's, "
            "Hugging Face transformers' or timm's layout) into a keras-hub "
            "preset directory. Of the LiT checkpoint only the image tower "
            "and its attention-pool head are converted, unless --lit is "
            "given."
        ),
    )
    parser.add_argument(
        "source", help="a .safetensors file or a checkpoint directory"
    )
    parser.add_argument("output_dir", help="the preset directory to create")
    parser.add_argument(
        "--num-heads",
        type=int,
        default=None,
        help="attention heads (default: config.json, else width / 128)",
    )
    parser.add_argument(
        "--preset-name",
        default=None,
        choices=sorted(backbone_presets),
        metavar="NAME",
        help="registered preset the checkpoint must match, e.g. "
        "aimv2_large_patch14_224",
    )
    parser.add_argument(
        "--lit",
        action="store_true",
        help="convert the whole LiT checkpoint (image and text towers, "
        "projections, logit scale) into an AIMV2LiTBackbone, with its CLIP "
        "tokenizer when vocab.json and merges.txt lie beside the weights",
    )
    parser.add_argument(
        "--num-text-heads",
        type=int,
        default=None,
        help="attention heads of the LiT text tower, with --lit (default: "
        "config.json's text_config, else width / 128)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output directory",
    )
    args = parser.parse_args(argv)
    if args.num_text_heads is not None and not args.lit:
        parser.error("--num-text-heads is only used with --lit")
    try:
        convert_checkpoint(
            args.source,
            args.output_dir,
            num_heads=args.num_heads,
            preset_name=args.preset_name,
            overwrite=args.overwrite,
            log=lambda message: print(message, flush=True),
            lit=args.lit,
            num_text_heads=args.num_text_heads,
        )
    except (CheckpointError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    return 0
