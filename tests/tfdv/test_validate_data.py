"""Tests of the packaged validator on small shards made at test time.

Clean shards of scene-like pictures (coloured shapes on a plain background,
captioned with what they show) pass; shards with one injected fault each
are flagged with a message that names the feature and the fault. Most runs
call `validate_data.main` in this process; two run the script itself.
"""

import dataclasses
import io
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import sentencepiece
import tensorflow as tf
import tensorflow_data_validation as tfdv
import validate_data
from PIL import Image
from PIL import ImageDraw

SCRIPT = validate_data.__file__
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (245, 215, 40),
    "purple": (140, 60, 190),
}
SHAPES = ("circle", "square", "triangle")
ABSENT = object()  # An example feature left out of the record.
NUM_CLEAN = 40


# Data made at test time.


def scene(rng, width=64, height=64, mode="RGB", image_format="PNG"):
    """Return `(image_bytes, caption)` of one to two coloured shapes."""
    image = Image.new("RGB", (width, height), (235, 235, 235))
    draw = ImageDraw.Draw(image)
    names = []
    for _ in range(rng.integers(1, 3)):
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        _draw(draw, rng, shape, COLOURS[colour], width, height)
        names.append(f"a {colour} {shape}")
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=image_format)
    caption = "There is " + " and ".join(names)
    if rng.random() < 0.5:
        caption += " on a light background"
    return buffer.getvalue(), caption


def _draw(draw, rng, shape, colour, width, height):
    size = min(width, height) // 3
    x = int(rng.integers(0, width - size))
    y = int(rng.integers(0, height - size))
    box = (x, y, x + size, y + size)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        corners = [(x, y + size), (x + size, y + size), (x + size // 2, y)]
        draw.polygon(corners, fill=colour)


def clean_examples(count, seed, prefix="clean"):
    rng = np.random.default_rng(seed)
    return [(f"{prefix}-{i}", *scene(rng)) for i in range(count)]


def serialize(key, image, caption):
    """Return a serialized Example; `ABSENT` features are left out."""
    values = {"key": key, "image": image, "caption": caption}
    features = {}
    for name, value in values.items():
        if value is ABSENT:
            continue
        if isinstance(value, str):
            value = value.encode("utf-8")
        features[name] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[value])
        )
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString()


def write_dataset(directory, examples, split="train", per_shard=16):
    """Write shards and a manifest as keras_aimv2's write_shards does."""
    os.makedirs(directory)
    chunks = [
        examples[i : i + per_shard] for i in range(0, len(examples), per_shard)
    ]
    shards = []
    for index, chunk in enumerate(chunks):
        name = f"{split}-{index:05d}-of-{len(chunks):05d}.tfrecord"
        with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
            for example in chunk:
                writer.write(serialize(*example))
        shards.append({"file": name, "num_examples": len(chunk)})
    manifest = {
        "format": "keras_aimv2.shards/1",
        "split": split,
        "num_examples": len(examples),
        "shards": shards,
    }
    with open(os.path.join(directory, "manifest.json"), "w") as file:
        json.dump(manifest, file)
    return str(directory)


def run_tool(*args):
    """Run the tool in this process; return its exit status."""
    return validate_data.main([str(arg) for arg in args])


def read_outputs(report_dir):
    with open(os.path.join(report_dir, "report.txt")) as file:
        report = file.read()
    anomalies = tfdv.load_anomalies_text(
        os.path.join(report_dir, "anomalies.pbtxt")
    )
    return report, anomalies


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """Clean shards, validated once; their curated schema is reused."""
    root = tmp_path_factory.mktemp("clean")
    data = write_dataset(root / "data", clean_examples(NUM_CLEAN, seed=0))
    report_dir = root / "report"
    status = run_tool(data, "--output", report_dir)
    return {
        "data": data,
        "report_dir": str(report_dir),
        "schema": str(report_dir / "schema.pbtxt"),
        "status": status,
    }


# Clean data.


def test_clean_shards_pass(clean_run):
    report, anomalies = read_outputs(clean_run["report_dir"])
    assert clean_run["status"] == 0
    assert "NO ANOMALIES" in report
    assert f"{NUM_CLEAN} examples" in report
    assert not anomalies.anomaly_info
    statistics = tfdv.load_stats_binary(
        os.path.join(clean_run["report_dir"], "statistics.pb")
    )
    assert statistics.datasets[0].num_examples == NUM_CLEAN
    with Image.open(
        os.path.join(clean_run["report_dir"], "summary.png")
    ) as png:
        assert png.format == "PNG" and png.width > 600


def test_clean_shards_pass_against_their_saved_schema(clean_run, tmp_path):
    report_dir = tmp_path / "report"
    status = run_tool(
        clean_run["data"],
        "--schema",
        clean_run["schema"],
        "--output",
        report_dir,
    )
    report, anomalies = read_outputs(report_dir)
    assert status == 0
    assert f"loaded from {clean_run['schema']}" in report
    assert not anomalies.anomaly_info


def test_inferred_schema_is_curated(clean_run):
    schema = tfdv.load_schema_text(clean_run["schema"])
    caption = tfdv.get_feature(schema, "caption")
    assert caption.WhichOneof("domain_info") == "natural_language_domain"
    assert not schema.string_domain
    image_format = tfdv.get_feature(schema, "image_format")
    assert list(image_format.string_domain.value) == ["JPEG", "PNG"]
    channels = tfdv.get_feature(schema, "image_channels").int_domain
    assert (channels.min, channels.max) == (3, 3)
    tokens = tfdv.get_feature(schema, "caption_tokens")
    assert (tokens.int_domain.min, tokens.int_domain.max) == (1, 77)
    assert tokens.drift_comparator.jensen_shannon_divergence.threshold == 0.1
    assert image_format.drift_comparator.infinity_norm.threshold == 0.1
    width = tfdv.get_feature(schema, "image_width").int_domain
    assert width.min == 32 and not width.HasField("max")
    aspect = tfdv.get_feature(schema, "image_aspect").float_domain
    assert aspect.min == pytest.approx(1 / 3) and aspect.max == 3.0
    for name in ("key", "caption", "image_format"):
        presence = tfdv.get_feature(schema, name).presence
        assert presence.min_fraction == 1.0


def test_limits_set_the_inferred_domains(clean_run, tmp_path):
    status = run_tool(
        clean_run["data"],
        "--context-length",
        40,
        "--min-image-size",
        48,
        "--max-aspect",
        2,
        "--output",
        tmp_path,
    )
    schema = tfdv.load_schema_text(str(tmp_path / "schema.pbtxt"))
    assert status == 0
    assert tfdv.get_feature(schema, "caption_tokens").int_domain.max == 40
    assert tfdv.get_feature(schema, "image_height").int_domain.min == 48
    assert tfdv.get_feature(schema, "image_aspect").float_domain.max == 2.0


# One injected fault at a time.


@dataclasses.dataclass(frozen=True)
class Fault:
    """A way to break examples and what the report must then say.

    Args:
        make: callable `(rng, index) -> (image, caption)`; `ABSENT` leaves
            a feature out.
        features: set of str. The features that must be anomalous.
        fragments: tuple of str. Text the report must contain.
    """

    make: object
    features: frozenset
    fragments: tuple


def _long_caption(rng, index):
    image, _ = scene(rng)
    return image, " ".join(["a red circle"] * 40)


def _grayscale(rng, index):
    return scene(rng, mode="L")


FAULTS = {
    "empty caption": Fault(
        lambda rng, index: (scene(rng)[0], "" if index % 2 else "   "),
        frozenset({"caption_boilerplate"}),
        ("Out-of-range values", "Unexpectedly large value: 1"),
    ),
    "caption over the context length": Fault(
        _long_caption,
        frozenset({"caption_tokens"}),
        ("Out-of-range values", "Unexpectedly large value: 121"),
    ),
    "non-image bytes": Fault(
        lambda rng, index: (b"<html>not an image</html>", scene(rng)[1]),
        frozenset({"image_format"}),
        ("Unexpected string values", "UNDECODABLE"),
    ),
    "grayscale image": Fault(
        _grayscale,
        frozenset({"image_channels"}),
        ("Out-of-range values", "Unexpectedly small value: 1", "mode L"),
    ),
    "CMYK image": Fault(
        lambda rng, index: scene(rng, mode="CMYK", image_format="JPEG"),
        frozenset({"image_channels"}),
        ("Unexpectedly large value: 4", "mode CMYK"),
    ),
    "missing caption": Fault(
        lambda rng, index: (scene(rng)[0], ABSENT),
        frozenset({"caption"}),
        ("Column dropped", "present in fewer examples than expected"),
    ),
    "missing image": Fault(
        lambda rng, index: (ABSENT, scene(rng)[1]),
        frozenset({"image_format"}),
        ("Column dropped", "present in fewer examples than expected"),
    ),
    "image below the minimum size": Fault(
        lambda rng, index: scene(rng, width=16, height=16),
        frozenset({"image_width", "image_height"}),
        ("Out-of-range values", "Unexpectedly small value: 16"),
    ),
    "extreme aspect ratio": Fault(
        lambda rng, index: scene(rng, width=256, height=40),
        frozenset({"image_aspect"}),
        ("Out-of-range values", "Unexpectedly high value: 6.4"),
    ),
}


def faulty_dataset(directory, fault, count=3):
    rng = np.random.default_rng(1)
    bad = [(f"bad-{i}", *fault.make(rng, i)) for i in range(count)]
    return write_dataset(directory, clean_examples(NUM_CLEAN, seed=2) + bad)


@pytest.mark.parametrize("schema", ["saved schema", "inferred schema"])
@pytest.mark.parametrize("name", FAULTS)
def test_fault_is_flagged(name, schema, clean_run, tmp_path):
    fault = FAULTS[name]
    data = faulty_dataset(tmp_path / "data", fault)
    options = ["--schema", clean_run["schema"]] * (schema == "saved schema")
    status = run_tool(data, *options, "--output", tmp_path / "report")
    report, anomalies = read_outputs(tmp_path / "report")
    assert status == 1
    assert set(anomalies.anomaly_info) == fault.features
    result = next(line for line in report.splitlines() if "result:" in line)
    assert "ANOMAL" in result
    for feature in fault.features:
        assert f"\n{feature}: " in report
    for fragment in fault.fragments:
        assert fragment in report
    # The examples behind the anomaly are named by key.
    assert "3 of 43 examples" in report and "'bad-0'" in report


def test_examples_csv_holds_the_features_of_each_example(tmp_path):
    data = faulty_dataset(tmp_path / "data", FAULTS["grayscale image"])
    run_tool(data, "--output", tmp_path / "report")
    frame = pd.read_csv(tmp_path / "report" / "examples.csv")
    bad = frame[frame["key"].str.startswith("bad-")]
    assert len(frame) == NUM_CLEAN + 3
    assert set(bad["image_mode"]) == {"L"} and set(bad["image_channels"]) == {1}
    assert set(frame["image_width"]) == {64}


# Drift against a reference.


def _drifted_examples(count, seed):
    # Same pictures, captions about twice as long.
    suffix = ", drawn in flat colour with no shading, shadow or outline"
    return [
        (key, image, caption + suffix)
        for key, image, caption in clean_examples(count, seed, "drifted")
    ]


def _validate_against_reference(clean_run, tmp_path, examples, seed):
    reference = write_dataset(
        tmp_path / "reference",
        clean_examples(150, seed=seed),
        split="validation",
    )
    data = write_dataset(tmp_path / "data", examples)
    return run_tool(
        data,
        "--reference",
        reference,
        "--schema",
        clean_run["schema"],
        "--output",
        tmp_path / "report",
    )


def test_drift_of_caption_length_is_flagged(clean_run, tmp_path):
    status = _validate_against_reference(
        clean_run, tmp_path, _drifted_examples(150, seed=4), seed=3
    )
    report, anomalies = read_outputs(tmp_path / "report")
    assert status == 1
    assert set(anomalies.anomaly_info) == {"caption_tokens"}
    assert "High approximate Jensen-Shannon divergence" in report
    drift_line = next(
        line
        for line in report.splitlines()
        if line.startswith("caption_tokens: Jensen-Shannon divergence")
    )
    assert drift_line.endswith("DRIFT") and "(threshold 0.1)" in drift_line
    assert "image_format: L-infinity distance 0.0000" in report


def test_same_distribution_does_not_drift(clean_run, tmp_path):
    status = _validate_against_reference(
        clean_run, tmp_path, clean_examples(150, seed=6), seed=5
    )
    report, anomalies = read_outputs(tmp_path / "report")
    assert status == 0, report
    assert not anomalies.anomaly_info
    drift = [line for line in report.splitlines() if "(threshold" in line]
    assert len(drift) == 5 and all(line.endswith(" ok") for line in drift)


def test_drift_from_a_constant_reference_is_explained(clean_run, tmp_path):
    # Every reference image is 64 x 64; two larger, valid ones make TFDV's
    # approximate divergence 1, which the report explains.
    reference = write_dataset(
        tmp_path / "reference", clean_examples(60, seed=9), split="validation"
    )
    rng = np.random.default_rng(10)
    larger = [(f"large-{i}", *scene(rng, 128, 128)) for i in range(2)]
    data = write_dataset(
        tmp_path / "data", clean_examples(58, seed=11) + larger
    )
    status = run_tool(
        data,
        "--reference",
        reference,
        "--schema",
        clean_run["schema"],
        "--output",
        tmp_path / "report",
    )
    report, anomalies = read_outputs(tmp_path / "report")
    assert status == 1
    assert set(anomalies.anomaly_info) == {"image_width", "image_height"}
    assert "every reference example has image_width 64" in report


# Token counting.


def train_tokenizer(directory, captions):
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(caption.lower() for caption in captions),
        model_writer=model,
        vocab_size=30,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    path = os.path.join(directory, "tiny.model")
    with open(path, "wb") as file:
        file.write(model.getvalue())
    return path


def test_tokens_are_counted_on_captions_cleaned_as_the_tokenizer_does(
    tmp_path,
):
    from data_validation.features import TokenCounter

    captions = [e[2] for e in clean_examples(NUM_CLEAN, seed=7)]
    counter = TokenCounter(train_tokenizer(tmp_path, captions))
    # Capitals, runs of whitespace and HTML entities count as the clean text.
    messy = [
        f"  {c.upper()}\t\n".replace(" ", " &nbsp; ") for c in captions[:6]
    ]
    assert counter.count(messy) == counter.count(captions[:6])
    assert "cleaned" in counter.describe()


def test_tokens_are_counted_with_the_sentencepiece_model(tmp_path):
    examples = clean_examples(NUM_CLEAN, seed=7)
    tokenizer = train_tokenizer(tmp_path, [e[2] for e in examples])
    processor = sentencepiece.SentencePieceProcessor(model_file=tokenizer)
    # Lowercased text, + 1 for the end token, as the preprocessor counts.
    expected = [len(processor.encode(e[2].lower())) + 1 for e in examples]
    context = int(np.median(expected))
    over = sum(length > context for length in expected)
    data = write_dataset(tmp_path / "data", examples)
    status = run_tool(
        data,
        "--tokenizer",
        tokenizer,
        "--context-length",
        context,
        "--output",
        tmp_path / "report",
    )
    frame = pd.read_csv(tmp_path / "report" / "examples.csv")
    report, anomalies = read_outputs(tmp_path / "report")
    assert frame["caption_tokens"].tolist() == expected
    assert f"SentencePiece model {tokenizer}" in report
    assert status == 1
    assert set(anomalies.anomaly_info) == {"caption_tokens"}
    assert 0 < over < NUM_CLEAN
    assert f"{over} of {NUM_CLEAN} examples" in report


def test_without_tokenizer_tokens_are_words_plus_one(clean_run):
    frame = pd.read_csv(os.path.join(clean_run["report_dir"], "examples.csv"))
    report, _ = read_outputs(clean_run["report_dir"])
    assert (frame["caption_tokens"] == frame["caption_words"] + 1).all()
    assert "approximated as words + 1" in report


# Exit status 1 for unreadable shards, 2 for bad arguments.


def test_unreadable_shard_fails_with_its_name(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", clean_examples(4, seed=8))
    shard = os.path.join(data, "train-00000-of-00001.tfrecord")
    with open(shard, "wb") as file:
        file.write(os.urandom(64))
    stale = tmp_path / "report" / "report.txt"
    stale.parent.mkdir()
    stale.write_text("NO ANOMALIES (from an earlier run)")
    assert run_tool(data, "--output", tmp_path / "report") == 1
    error = capsys.readouterr().err
    assert "unreadable data" in error and shard in error
    assert not stale.exists()


@pytest.fixture
def not_a_model(tmp_path):
    path = tmp_path / "bad.model"
    path.write_text("not a model")
    return str(path)


BAD_ARGUMENTS = {
    "missing directory": (["/nonexistent/shards"], "SHARDS_DIR"),
    "no manifest": (["{empty}"], "no manifest.json"),
    "missing reference": (["{data}", "--reference", "/nonexistent"], "--ref"),
    "limits with a schema": (
        ["{data}", "--schema", "{schema}", "--min-image-size", "8"],
        "--min-image-size set the domains of an inferred schema",
    ),
    "context too short": (["{data}", "--context-length", "1"], "at least 2"),
    "aspect below 1": (["{data}", "--max-aspect", "0.5"], "--max-aspect"),
    "schema not a proto": (["{data}", "--schema", "{junk}"], "does not parse"),
    "tokenizer not a model": (
        ["{data}", "--tokenizer", "{junk}"],
        "must be a SentencePiece model file",
    ),
    "unknown option": (["{data}", "--frobnicate"], "unrecognized"),
}


@pytest.mark.parametrize("name", BAD_ARGUMENTS)
def test_bad_arguments_exit_2(name, clean_run, not_a_model, tmp_path, capsys):
    arguments, message = BAD_ARGUMENTS[name]
    (tmp_path / "empty").mkdir()
    values = {
        "data": clean_run["data"],
        "schema": clean_run["schema"],
        "junk": not_a_model,
        "empty": str(tmp_path / "empty"),
    }
    arguments = [argument.format(**values) for argument in arguments]
    status = run_tool(*arguments, "--output", tmp_path / "report")
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "report" / "report.txt").exists()


# The script itself.


def _script(*args, cwd=None):
    return subprocess.run(
        [sys.executable, SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=cwd,
    )


def test_script_exits_0_on_clean_shards_and_prints_its_speed(
    clean_run, tmp_path
):
    result = _script(
        clean_run["data"],
        "--schema",
        clean_run["schema"],
        "--output",
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"validated {NUM_CLEAN} examples in" in result.stdout
    assert "examples/s" in result.stdout and "no anomalies" in result.stdout
    assert "IPython" not in result.stderr


def test_script_exits_2_on_bad_arguments(tmp_path):
    result = _script(tmp_path / "nothing-here")
    assert result.returncode == 2
    assert "SHARDS_DIR must be a dataset directory" in result.stderr


def test_script_runs_from_any_folder_under_the_name_it_is_given(tmp_path):
    # As `aimv2 validate` runs it: by path, from the user's folder.
    result = _script(
        "--prog", "aimv2 validate", tmp_path / "nothing-here", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("aimv2 validate: error: SHARDS_DIR")
    usage = _script("--prog", "aimv2 validate", "--help", cwd=tmp_path)
    assert usage.returncode == 0
    assert usage.stdout.startswith("usage: aimv2 validate")
