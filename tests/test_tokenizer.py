"""Caption tokenizer: training a SentencePiece model and `AIMV2Tokenizer`."""

import os

import numpy as np
import pytest
import sentencepiece
import tensorflow as tf
from _data_helpers import VOCABULARY_SIZE
from _data_helpers import make_captions
from _data_helpers import train_tiny_tokenizer
from _data_helpers import write_tiny_shards
from conftest import TINY_BACKBONE
from keras_hub.src.tests.test_case import TestCase

import keras_aimv2
from keras_aimv2.cli import main as aimv2
from keras_aimv2.data.tokenizer_training import iter_captions
from keras_aimv2.data.tokenizer_training import main
from keras_aimv2.data.tokenizer_training import train_sentencepiece
from keras_aimv2.models.aimv2_tokenizer import AIMV2Tokenizer


@pytest.fixture(scope="module")
def proto_path(tmp_path_factory):
    return train_tiny_tokenizer(str(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="module")
def tokenizer(proto_path):
    return AIMV2Tokenizer(proto=proto_path)


def _processor(path):
    return sentencepiece.SentencePieceProcessor(model_file=path)


def test_trained_model_ids(proto_path):
    assert proto_path.endswith("tiny.model")
    processor = _processor(proto_path)
    assert processor.vocab_size() == VOCABULARY_SIZE
    assert processor.pad_id() == 0
    assert processor.eos_id() == 1
    assert processor.unk_id() == 2
    assert processor.bos_id() == -1
    assert processor.id_to_piece(1) == "</s>"


def test_training_cleans_captions_unless_asked(tmp_path):
    captions = [
        c.upper() if i % 2 else c for i, c in enumerate(make_captions())
    ]
    captions += ["a &amp; a &lt;b&gt; tile\u00e2\u20ac\u2122s"] * 50
    lower = _processor(train_sentencepiece(captions, tmp_path / "lower", 100))
    pieces = set(lower.id_to_piece(list(range(lower.vocab_size()))))
    assert not any(c.isupper() for piece in pieces for c in piece)
    # Unescaped HTML and repaired Unicode (ftfy also straightens curly
    # quotes): no entity, no mojibake.
    characters = {c for piece in pieces for c in piece}
    assert {"&", "<", "'"} <= characters
    assert not characters & {";", "\u00e2", "\u20ac"}
    kept = train_sentencepiece(
        captions, tmp_path / "kept.model", 100, normalize=False
    )
    assert kept == str(tmp_path / "kept.model")
    kept = _processor(kept)
    pieces = set(kept.id_to_piece(list(range(kept.vocab_size()))))
    assert any(c.isupper() for piece in pieces for c in piece)


def test_training_errors(tmp_path):
    with pytest.raises(ValueError, match="vocabulary_size=5000"):
        train_sentencepiece(make_captions(50), tmp_path / "big", 5000)
    with pytest.raises(ValueError, match="model_type='word'"):
        train_sentencepiece(["a b"], tmp_path / "m", 10, model_type="word")
    with pytest.raises(ValueError, match="no non-empty caption"):
        train_sentencepiece(["", "  "], tmp_path / "m", 10)
    with pytest.raises(ValueError, match="distinct"):
        train_sentencepiece(["a b"], tmp_path / "m", 10, pad_id=1)
    with pytest.raises(ValueError, match="vocabulary_size=0"):
        train_sentencepiece(["a b"], tmp_path / "m", 0)


def test_captions_from_file_and_shards(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("First one\n\n  second  \nthird\n", encoding="utf-8")
    assert list(iter_captions(path)) == ["First one", "second", "third"]
    assert list(iter_captions(path, limit=2)) == ["First one", "second"]
    shards = tmp_path / "shards"
    written = write_tiny_shards(shards, count=5, examples_per_shard=2)
    assert list(iter_captions(shards)) == written
    with pytest.raises(ValueError, match="does not exist"):
        iter_captions(tmp_path / "missing.txt")


def test_command_line(tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("\n".join(make_captions(300)), encoding="utf-8")
    output = tmp_path / "cli" / "tokenizer.model"
    arguments = ["--captions", str(captions), "--vocabulary-size", "150"]
    arguments += ["--output", str(output), "--num-threads", "1"]
    assert main(arguments) == 0
    assert _processor(str(output)).vocab_size() == 150
    # The command users run, `aimv2 train-tokenizer`, in this process (a
    # new one would take seconds to import TensorFlow).
    command_output = tmp_path / "command.model"
    arguments[arguments.index(str(output))] = str(command_output)
    assert aimv2(["train-tokenizer", *arguments]) == 0
    with open(output, "rb") as a, open(command_output, "rb") as b:
        assert a.read() == b.read()


def test_special_ids(tokenizer):
    assert tokenizer.vocabulary_size() == VOCABULARY_SIZE
    assert (tokenizer.end_token, tokenizer.end_token_id) == ("</s>", 1)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<pad>", 0)
    assert sorted(tokenizer.special_token_ids) == [0, 1]


def test_cleans_and_round_trips(tokenizer):
    captions = make_captions(5, seed=3)
    ids = tokenizer(captions)
    assert ids == tokenizer([caption.lower() for caption in captions])
    assert all(0 not in row and 1 not in row for row in ids)
    assert tokenizer.detokenize(ids) == [c.lower() for c in captions]
    single = tokenizer(captions[0])
    assert tokenizer.detokenize(single) == captions[0].lower()
    # End and pad ids decode to nothing.
    padded = np.asarray(single).tolist() + [1, 0, 0]
    assert tokenizer.detokenize(padded) == captions[0].lower()
    # Tensors and arrays of strings are cleaned too.
    expected = single.tolist()
    assert tokenizer(tf.constant(captions[0])).tolist() == expected
    assert tokenizer(np.array(captions[:2])) == ids[:2]
    assert tokenizer(tf.constant(captions[:2])) == ids[:2]
    messy = [f"  {c.upper()} \n" for c in captions[:2]]
    assert tokenizer(messy) == ids[:2]
    assert tokenizer(tf.constant(messy)) == ids[:2]
    raw = AIMV2Tokenizer(proto=tokenizer.proto, normalize=False)
    assert raw(captions[0].upper()).tolist() != single.tolist()


def test_graph_mode_matches_eager(tokenizer):
    captions = make_captions(6, seed=4)
    dataset = tf.data.Dataset.from_tensor_slices(captions).batch(3)
    graph = [row for batch in dataset.map(tokenizer) for row in batch]
    assert [row.numpy().tolist() for row in graph] == tokenizer(captions)
    decoded = dataset.map(tokenizer).map(tokenizer.detokenize)
    decoded = [text.decode() for batch in decoded for text in batch.numpy()]
    assert decoded == [caption.lower() for caption in captions]


def test_sequence_length_pads_and_truncates(proto_path):
    tokenizer = AIMV2Tokenizer(proto=proto_path, sequence_length=6)
    short, long = "ab", make_captions(1, seed=5)[0] * 3
    ids = np.asarray(tokenizer([short, long]))
    assert ids.shape == (2, 6)
    free = AIMV2Tokenizer(proto=proto_path)
    short_ids = free(short).tolist()
    assert ids[0].tolist() == short_ids + [0] * (6 - len(short_ids))
    assert ids[1].tolist() == free(long).tolist()[:6]


def test_pad_and_end_pieces_from_proto_or_arguments(tmp_path, proto_path):
    # AIMv2 with SigLIP's model pads with `</s>`, the end token.
    siglip_style = AIMV2Tokenizer(proto=proto_path, pad_token="</s>")
    assert siglip_style.pad_token_id == siglip_style.end_token_id == 1
    captions = make_captions(300)
    no_pad = train_sentencepiece(captions, tmp_path / "no_pad", 100, pad_id=-1)
    tokenizer = AIMV2Tokenizer(proto=no_pad)
    assert tokenizer.pad_token_id == tokenizer.end_token_id == 1
    no_end = train_sentencepiece(captions, tmp_path / "no_end", 100, eos_id=-1)
    with pytest.raises(ValueError, match="eos_id=-1"):
        AIMV2Tokenizer(proto=no_end)
    assert AIMV2Tokenizer(proto=no_end, end_token="<pad>").end_token_id == 0
    with pytest.raises(ValueError, match="'<nope>'"):
        AIMV2Tokenizer(proto=proto_path, pad_token="<nope>")
    with pytest.raises(ValueError, match="end_token=5"):
        AIMV2Tokenizer(proto=proto_path, end_token=5)
    with pytest.raises(ValueError, match="add_bos=True"):
        AIMV2Tokenizer(proto=proto_path, add_bos=True)


def test_saved_in_preset(tmp_path, tokenizer):
    preset = str(tmp_path / "preset")
    keras_aimv2.AIMV2Backbone(**TINY_BACKBONE).save_to_preset(preset)
    special = AIMV2Tokenizer(proto=tokenizer.proto, pad_token="</s>")
    special.save_to_preset(preset)
    assert os.path.isfile(
        os.path.join(preset, "assets", "tokenizer", "vocabulary.spm")
    )
    loaded = AIMV2Tokenizer.from_preset(preset)
    assert isinstance(loaded, AIMV2Tokenizer)
    assert loaded.pad_token_id == 1 and loaded.normalize
    captions = make_captions(4, seed=6)
    assert loaded(captions) == tokenizer(captions)


class AIMV2TokenizerHarnessTest(TestCase):
    """keras-hub's preprocessing-layer harness: config and serialization
    round trips, direct calls, `tf.data` (batched and not), Grain, and
    `detokenize` giving back the (already clean) captions."""

    @pytest.fixture(autouse=True)
    def _proto(self, proto_path):
        self.proto_path = proto_path

    def test_tokenizer_basics(self):
        captions = [caption.lower() for caption in make_captions(3, seed=7)]
        # The ids SentencePiece itself gives the clean captions.
        expected = _processor(self.proto_path).encode(captions)
        self.run_preprocessing_layer_test(
            cls=AIMV2Tokenizer,
            init_kwargs={"proto": self.proto_path},
            input_data=captions,
            expected_output=expected,
        )
