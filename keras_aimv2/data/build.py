"""Command line that builds a sharded image-caption dataset.

It is `aimv2 build-dataset`:

```
aimv2 build-dataset scenes --num-examples 10000 --seed 0 \\
    --image-size 64 --output data/scenes/train
aimv2 build-dataset fashion-mnist --split test \\
    --output data/fashion-mnist/test
aimv2 build-dataset folder --images DIR --captions FILE \\
    --output data/mine/train
aimv2 build-dataset webdataset --tars 'shards/*.tar' \\
    --output data/web/train
```
"""

import argparse
import os
import sys

from keras_aimv2.data import fashion_mnist
from keras_aimv2.data import scenes
from keras_aimv2.data import shards
from keras_aimv2.data import sources


def main(argv=None, prog="aimv2 build-dataset"):
    """Build a dataset as the command line `argv` asks.

    Rows that cannot be used (missing or undecodable images, bad captions,
    unreadable rows, image paths outside the image folder, damaged tars)
    never stop the build: they are counted by reason in the manifest and
    listed in `skipped.jsonl` beside it.

    Args:
        argv: list of str or `None`. The arguments, without the program
            name. Defaults to `None`, which reads `sys.argv`.
        prog: str. The name of the command in usage and error messages.
            Defaults to `"aimv2 build-dataset"`.

    Returns:
        `0` once the dataset is written. `--help` exits with status 0 after
        printing the usage; bad arguments, missing inputs and a non-empty
        output directory exit with status 2 and a message.
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        examples, source, metadata = _SOURCES[args.command](args)
        print(f"building {source} into {args.output}", file=sys.stderr)
        manifest = shards.write_shards(
            examples,
            args.output,
            examples_per_shard=args.examples_per_shard,
            split=args.split,
            source=source,
            metadata=metadata,
            overwrite=args.overwrite,
        )
    except (OSError, ValueError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    print(f"dataset written to {args.output}", file=sys.stderr)
    if manifest["skipped"]:
        listing = os.path.join(args.output, manifest["skipped_examples"])
        print(f"skipped examples are listed in {listing}", file=sys.stderr)
    return 0


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {text!r}"
        )
    return value


def _parser(prog):
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Write image-caption examples as TFRecord shards with a "
        "manifest, skipping and counting invalid examples.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--output", required=True, help="directory of the new dataset"
    )
    common.add_argument(
        "--examples-per-shard", type=_positive_int, default=1000
    )
    common.add_argument(
        "--split", default="train", help="split name (default: train)"
    )
    common.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a dataset already in --output",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    scene = commands.add_parser(
        "scenes", parents=[common], help="procedural captioned shapes"
    )
    scene.add_argument("--num-examples", type=_positive_int, required=True)
    scene.add_argument("--seed", type=int, default=0)
    scene.add_argument("--image-size", type=_positive_int, default=64)
    fashion = commands.add_parser(
        "fashion-mnist",
        parents=[common],
        help="Fashion-MNIST from Debian's dataset-fashion-mnist; --split "
        "train or test also selects its files",
    )
    fashion.add_argument("--root", default=fashion_mnist.DEFAULT_ROOT)
    fashion.add_argument("--seed", type=int, default=0)
    fashion.add_argument("--limit", type=_positive_int, default=None)
    fashion.add_argument("--image-size", type=_positive_int, default=28)
    folder = commands.add_parser(
        "folder", parents=[common], help="image directory + captions file"
    )
    folder.add_argument("--images", required=True, help="image directory")
    folder.add_argument(
        "--captions", required=True, help="captions .jsonl, .csv or .tsv"
    )
    web = commands.add_parser(
        "webdataset", parents=[common], help="WebDataset tar shards"
    )
    web.add_argument(
        "--tars",
        required=True,
        nargs="+",
        help="tar files, glob patterns or directories",
    )
    return parser


def _scenes(args):
    examples = scenes.scenes_source(
        args.num_examples, args.seed, args.image_size
    )
    metadata = {
        "num_examples": args.num_examples,
        "seed": args.seed,
        "image_size": args.image_size,
    }
    return examples, "keras_aimv2 procedural scenes", metadata


def _fashion_mnist(args):
    examples = fashion_mnist.fashion_mnist_source(
        args.split, args.root, args.seed, args.limit, args.image_size
    )
    metadata = {
        "root": args.root,
        "fashion_mnist_split": args.split,
        "seed": args.seed,
        "limit": args.limit,
        "image_size": args.image_size,
    }
    return examples, f"Fashion-MNIST {args.split} split", metadata


def _folder(args):
    examples = sources.folder_source(args.images, args.captions)
    metadata = {"images": args.images, "captions": args.captions}
    return examples, f"image folder {args.images}", metadata


def _webdataset(args):
    examples = sources.webdataset_source(args.tars)
    return examples, "WebDataset tars", {"tars": args.tars}


_SOURCES = {
    "scenes": _scenes,
    "fashion-mnist": _fashion_mnist,
    "folder": _folder,
    "webdataset": _webdataset,
}
