"""Write the results of a validation: protos, a readable report, a figure.

`write_outputs` writes into the report directory:

- `statistics.pb`: the `DatasetFeatureStatisticsList` of the per-example
  features, binary (`tfdv.load_stats_binary` reads it back), and
  `reference_statistics.pb` for the reference when there is one;
- `schema.pbtxt`: the schema validated against, inferred and curated or
  loaded;
- `anomalies.pbtxt`: TFDV's `Anomalies`;
- `examples.csv`: the per-example features, to find the examples behind
  an anomaly;
- `report.txt`: each anomaly with the feature, its description, TFDV's
  short and long descriptions and the examples that break the schema;
  drift measurements; a summary of every feature;
- `summary.png`: histograms of caption token length and image width,
  height and aspect ratio, and bar charts of image formats and channels.
"""

import dataclasses
import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow_data_validation as tfdv  # noqa: E402
from tensorflow_metadata.proto.v0 import anomalies_pb2  # noqa: E402

from data_validation import schema as schema_lib  # noqa: E402

_EXAMPLES_SHOWN = 5
_TOP_VALUES = 5
_MEASUREMENT_NAMES = {
    "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon divergence",
    "L_INFTY": "L-infinity distance",
    "NORMALIZED_ABSOLUTE_DIFFERENCE": "normalized absolute difference",
}


@dataclasses.dataclass
class Validation:
    """Everything a validation produced.

    Args:
        dataset: `Dataset`. The data validated.
        frame: `pandas.DataFrame`. Its per-example features.
        statistics: `DatasetFeatureStatisticsList` of `frame`.
        schema: `Schema` validated against.
        schema_source: str. Where the schema comes from, for the report.
        anomalies: `Anomalies` found by TFDV.
        token_description: str. How caption tokens were counted.
        reference: `Dataset` or `None`. The data compared for drift.
        reference_frame: `pandas.DataFrame` or `None`.
        reference_statistics: `DatasetFeatureStatisticsList` or `None`.
    """

    dataset: object
    frame: pd.DataFrame
    statistics: object
    schema: object
    schema_source: str
    anomalies: object
    token_description: str
    reference: object = None
    reference_frame: pd.DataFrame | None = None
    reference_statistics: object = None

    @property
    def anomaly_count(self):
        """The number of features (and dataset-level checks) that failed."""
        dataset_level = len(self.anomalies.dataset_anomaly_info.reason)
        return len(self.anomalies.anomaly_info) + (dataset_level > 0)


def write_outputs(validation, output_dir):
    """Write every output of a validation into a directory.

    Args:
        validation: `Validation`.
        output_dir: str. The report directory; created if needed.

    Returns:
        The path of `report.txt`.
    """
    os.makedirs(output_dir, exist_ok=True)
    _write_binary(output_dir, "statistics.pb", validation.statistics)
    if validation.reference_statistics is not None:
        _write_binary(
            output_dir,
            "reference_statistics.pb",
            validation.reference_statistics,
        )
    tfdv.write_schema_text(
        validation.schema, os.path.join(output_dir, "schema.pbtxt")
    )
    tfdv.write_anomalies_text(
        validation.anomalies, os.path.join(output_dir, "anomalies.pbtxt")
    )
    validation.frame.to_csv(
        os.path.join(output_dir, "examples.csv"), index=False
    )
    plot_summary(validation, os.path.join(output_dir, "summary.png"))
    path = os.path.join(output_dir, "report.txt")
    with open(path, "w", encoding="utf-8") as file:
        file.write(report_text(validation))
    return path


def _write_binary(output_dir, name, message):
    with open(os.path.join(output_dir, name), "wb") as file:
        file.write(message.SerializeToString())


def report_text(validation):
    """Return the person-readable report of a validation.

    Args:
        validation: `Validation`.

    Returns:
        The report, a str of lines.
    """
    sections = [
        _header(validation),
        _anomaly_section(validation),
        _drift_section(validation),
        _summary_section(validation.frame),
    ]
    return "\n\n".join(section for section in sections if section) + "\n"


def _header(validation):
    count = validation.anomaly_count
    if count:
        result = (
            f"{count} ANOMAL{'Y' if count == 1 else 'IES'}: the data does "
            "not match the schema; fix it (or the schema) before training."
        )
    else:
        result = "NO ANOMALIES: the data matches the schema."
    lines = [
        "Data validation report (TensorFlow Data Validation)",
        f"data:      {validation.dataset.describe()}, "
        f"{len(validation.frame)} examples",
    ]
    if validation.reference is not None:
        lines.append(
            f"reference: {validation.reference.describe()}, "
            f"{len(validation.reference_frame)} examples"
        )
    lines += [
        f"schema:    {validation.schema_source}",
        f"tokens:    {validation.token_description}",
        f"result:    {result}",
        "details:   examples.csv (features of every example), summary.png "
        "(distributions), anomalies.pbtxt, statistics.pb",
    ]
    return "\n".join(lines)


def _anomaly_section(validation):
    anomalies = validation.anomalies
    if not validation.anomaly_count:
        return ""
    lines = ["Anomalies", "---------"]
    limits = schema_lib.describe_limits(validation.schema)
    for name in sorted(anomalies.anomaly_info):
        info = anomalies.anomaly_info[name]
        lines.append(_feature_title(validation.schema, name, limits))
        lines += [_reason_text(reason) for reason in info.reason]
        lines += _offenders(validation, name)
    dataset_info = anomalies.dataset_anomaly_info
    if dataset_info.reason:
        lines.append("(dataset)")
        lines += [_reason_text(reason) for reason in dataset_info.reason]
    return "\n".join(lines)


def _feature_title(schema, name, limits):
    feature = _schema_feature(schema, name)
    title = name
    if feature is not None and feature.annotation.comment:
        title += f": {feature.annotation.comment[0]}"
    notes = []
    if name in limits:
        notes.append(limits[name])
    if feature is not None and feature.presence.min_fraction >= 1.0:
        notes.append("required")
    if notes:
        title += f" (schema: {', '.join(notes)})"
    return title


def _schema_feature(schema, name):
    for feature in schema.feature:
        if feature.name == name:
            return feature
    return None


def _reason_text(reason):
    return f"  - {reason.short_description}: {reason.description.strip()}"


def _offenders(validation, name):
    feature = _schema_feature(validation.schema, name)
    frame = validation.frame
    if feature is None or name not in frame:
        return []
    mask = offending_rows(frame, feature)
    count = int(mask.sum())
    if not count:
        return []
    shown = [
        _example_text(frame, name, index)
        for index in frame.index[mask][:_EXAMPLES_SHOWN]
    ]
    return [
        f"  {count} of {len(frame)} examples ({_percent(count, len(frame))}) "
        f"break the schema, e.g. {', '.join(shown)}"
    ]


def _percent(count, total):
    share = 100.0 * count / total
    return f"{share:.1f}%" if share >= 0.1 or not share else f"{share:.2g}%"


def offending_rows(frame, feature):
    """Return which rows break a feature's presence or domain.

    Args:
        frame: `pandas.DataFrame` of per-example features.
        feature: `schema_pb2.Feature`. A feature, named like a column.

    Returns:
        A boolean `pandas.Series`, true for the rows that break it.
    """
    column = frame[feature.name]
    mask = pd.Series(False, index=frame.index)
    if feature.presence.min_fraction >= 1.0:
        mask |= column.isna()
    domain = feature.WhichOneof("domain_info")
    if domain in ("int_domain", "float_domain"):
        bounds = getattr(feature, domain)
        if bounds.HasField("min"):
            mask |= (column < bounds.min).fillna(False).astype(bool)
        if bounds.HasField("max"):
            mask |= (column > bounds.max).fillna(False).astype(bool)
    elif domain == "string_domain":
        allowed = set(feature.string_domain.value)
        mask |= (column.notna() & ~column.isin(allowed)).astype(bool)
    return mask


def _example_text(frame, name, index):
    key = frame.at[index, "key"]
    label = f"row {index}" if pd.isna(key) else repr(key)
    value = frame.at[index, name]
    shown = "missing" if pd.isna(value) else _short(value)
    if name == "image_channels" and not pd.isna(value):
        shown += f", mode {frame.at[index, 'image_mode']}"
    return f"{label} ({shown})"


def _short(value, width=40):
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _drift_section(validation):
    anomalies = validation.anomalies
    if not anomalies.drift_skew_info:
        return ""
    lines = ["Drift against the reference", "---------------------------"]
    kind = anomalies_pb2.DriftSkewInfo.Measurement.Type
    for info in anomalies.drift_skew_info:
        name = ".".join(info.path.step)
        for measurement in info.drift_measurements:
            label = kind.Name(measurement.type)
            verdict = (
                "DRIFT" if measurement.value > measurement.threshold else "ok"
            )
            line = (
                f"{name}: {_MEASUREMENT_NAMES.get(label, label)} "
                f"{measurement.value:.4f} (threshold "
                f"{measurement.threshold:g}) {verdict}"
            )
            if verdict == "DRIFT":
                line += _constant_note(validation, name, label)
            lines.append(line)
    return "\n".join(lines)


def _constant_note(validation, name, label):
    """Explain a divergence measured against a single reference value."""
    frame = validation.reference_frame
    if label != "JENSEN_SHANNON_DIVERGENCE" or frame is None:
        return ""
    if name not in frame or frame[name].nunique() != 1:
        return ""
    value = frame[name].dropna().iloc[0]
    return (
        f"\n  (every reference example has {name} {value}; "
        "TFDV's approximate divergence is then 1 for any other value, "
        "however few)"
    )


def _summary_section(frame):
    lines = ["Features", "--------"]
    width = max(len(name) for name in frame.columns)
    for name in frame.columns:
        column = frame[name]
        missing = int(column.isna().sum())
        text = f"{name:<{width}}  missing {missing:>6}  "
        if pd.api.types.is_numeric_dtype(column.dtype):
            text += _numeric_summary(column.dropna())
        elif name in ("key", "caption"):
            text += _text_summary(column.dropna())
        else:
            text += _top_values(column.dropna())
        lines.append(text.rstrip())
    return "\n".join(lines)


def _numeric_summary(values):
    if values.empty:
        return ""
    values = values.astype(float)
    return (
        f"min {values.min():.4g}  median {values.median():.4g}  "
        f"mean {values.mean():.4g}  max {values.max():.4g}"
    )


def _text_summary(values):
    if values.empty:
        return ""
    distinct = values.nunique()
    text = f"{distinct} distinct ({_percent(distinct, len(values))})"
    counts = values.value_counts()
    if counts.iloc[0] > 1:
        repeated = ", ".join(
            f"{_short(value, 30)!r} x{count}"
            for value, count in counts.head(3).items()
            if count > 1
        )
        text += f"; most repeated: {repeated}"
    return text


def _top_values(values):
    if values.empty:
        return ""
    counts = values.value_counts().head(_TOP_VALUES)
    shares = [
        f"{_short(value, 30)}: {_percent(count, len(values))}"
        for value, count in counts.items()
    ]
    return f"{values.nunique()} distinct; top " + "; ".join(shares)


def plot_summary(validation, path):
    """Draw histograms and bar charts of the main features into a PNG.

    The reference, when there is one, is drawn over the histograms as a
    line, both normalized, so that drift shows.

    Args:
        validation: `Validation`.
        path: str. The PNG file to write.
    """
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    limits = schema_lib.describe_limits(validation.schema)
    histograms = (
        "caption_tokens",
        "image_width",
        "image_height",
        "image_aspect",
    )
    for axis, name in zip(axes.flat, histograms, strict=False):
        _histogram(axis, validation, name, limits.get(name))
    _bars(axes.flat[4], validation.frame, "image_format", "image formats")
    channels = _channel_labels(validation.frame)
    _bars(axes.flat[5], channels.to_frame(), "channels", "image channels")
    figure.suptitle(
        f"{validation.dataset.directory}: {len(validation.frame)} examples"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _histogram(axis, validation, name, limit):
    values = validation.frame[name].dropna().astype(float)
    reference = validation.reference_frame
    density = reference is not None
    if not values.empty:
        axis.hist(values, bins=30, density=density, label="data")
    if reference is not None:
        reference_values = reference[name].dropna().astype(float)
        if not reference_values.empty:
            axis.hist(
                reference_values,
                bins=30,
                density=True,
                histtype="step",
                linewidth=2,
                label="reference",
            )
        axis.legend()
    axis.set_title(name + (f" (schema: {limit})" if limit else ""))
    axis.set_ylabel("density" if density else "examples")


def _bars(axis, frame, name, title):
    counts = frame[name].fillna("missing").value_counts()
    axis.bar([str(value) for value in counts.index], counts.to_numpy())
    axis.set_title(title)
    axis.set_ylabel("examples")


def _channel_labels(frame):
    labels = [
        "not decoded" if pd.isna(channels) else f"{channels} ({mode})"
        for channels, mode in zip(
            frame["image_channels"], frame["image_mode"], strict=True
        )
    ]
    return pd.Series(labels, name="channels", dtype=object)
