"""The AIMv2 caption tokenizer: SigLIP-style SentencePiece on clean text."""

import sentencepiece
from keras_hub.tokenizers import SentencePieceTokenizer

from keras_aimv2.api import register
from keras_aimv2.captions import normalize_captions
from keras_aimv2.compat import SpecialTokens
from keras_aimv2.models.aimv2_backbone import AIMV2Backbone
from keras_aimv2.models.aimv2_presets import NamedPresets


@register
class AIMV2Tokenizer(NamedPresets, SpecialTokens, SentencePieceTokenizer):
    """SentencePiece tokenizer of AIMv2 captions.

    AIMv2 tokenizes captions with SigLIP's SentencePiece model (32000
    pieces), appends the end token and pads to 77 tokens ("Multimodal
    Autoregressive Pre-training of Large Vision Encoders", Fini et al.,
    CVPR 2025). Its trainer first cleans the text: broken Unicode repaired,
    HTML unescaped, whitespace collapsed, lowercased
    (`keras_aimv2.captions.normalize_caption`). This layer cleans the text
    and runs SentencePiece, and knows the end and pad ids; appending the
    end token and padding is left to `AIMV2PretrainerPreprocessor`, as in
    keras-hub. It never adds a start token: the AIMv2 decoder prepends its
    own learned one.

    Which tokens are training targets follows from the pad id: every
    position whose token is not the pad token (AIMv2's trainer ignores the
    pad id in its loss). The end and pad tokens default to the pieces the
    proto declares (`eos_id` and `pad_id`), or the end token when the proto
    declares no pad piece. With distinct ids, as in the protos
    `keras_aimv2.data.tokenizer_training` trains (pad 0, end 1, unknown
    2), the end token is a target and the decoder learns where captions
    end. AIMv2's trainer reads SigLIP's model through transformers'
    `SiglipTokenizer`, which pads with the end token `</s>` (id 1, so the
    end is never a target) and also deletes punctuation:
    `AIMV2Tokenizer(proto, pad_token="</s>", remove_punctuation=True)`
    gives its ids.

    The proto is saved as an asset of keras-hub presets.

    Args:
        proto: str, bytes or `None`. Path to a SentencePiece model file or
            its serialized bytes; `None` until assets are loaded from a
            preset. Defaults to `None`.
        end_token: str or `None`. Piece appended to every caption. `None`
            uses the proto's end-of-sequence piece. Defaults to `None`.
        pad_token: str or `None`. Piece that pads captions. `None` uses the
            proto's pad piece, or the end token when the proto has none.
            Defaults to `None`.
        normalize: bool. Clean the text as AIMv2's trainer does before
            tokenizing it. Defaults to `True`.
        remove_punctuation: bool. Also delete ASCII punctuation, as SigLIP's
            tokenizer does (only with `normalize=True`). Defaults to
            `False`.
        **kwargs: other keyword arguments passed to
            `keras_hub.tokenizers.SentencePieceTokenizer` (`sequence_length`,
            `dtype`, `name`).

    Example:

    >>> tokenizer = AIMV2Tokenizer(proto="tokenizer.model")
    >>> ids = tokenizer("A Photo  of a Dog &amp; a cat")
    >>> tokenizer.detokenize(ids)
    'a photo of a dog & a cat'
    >>> tokenizer.end_token_id, tokenizer.pad_token_id
    (1, 0)
    """

    backbone_cls = AIMV2Backbone

    def __init__(
        self,
        proto=None,
        end_token=None,
        pad_token=None,
        normalize=True,
        remove_punctuation=False,
        **kwargs,
    ):
        for name, value in (("end_token", end_token), ("pad_token", pad_token)):
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"`{name}` must be a string piece of the vocabulary or "
                    f"`None`. Received: {name}={value!r}"
                )
        if kwargs.get("add_bos"):
            raise ValueError(
                "`add_bos=True` is not supported: the AIMv2 decoder "
                "prepends its own learned start token. Received: "
                "add_bos=True"
            )
        # Presets saved before `normalize` existed name its lowercasing.
        self.normalize = bool(kwargs.pop("lowercase", normalize))
        self.remove_punctuation = bool(remove_punctuation)
        self._requested_end_token = end_token
        self._requested_pad_token = pad_token
        self.declare_special_token(end_token, "end_token")
        self.declare_special_token(pad_token, "pad_token")
        super().__init__(proto=proto, **kwargs)

    def resolve_special_tokens(self):
        """Resolve the end and pad pieces the new proto declares.

        Runs each time a proto is set (`SpecialTokens`), before keras-hub
        looks the pieces' ids up in its vocabulary.

        Raises:
            ValueError: when no end token was given and the proto declares
                no end-of-sequence piece.
        """
        processor = sentencepiece.SentencePieceProcessor(model_proto=self.proto)
        end_token = self._requested_end_token
        if end_token is None:
            end_id = processor.eos_id()
            if end_id < 0:
                raise ValueError(
                    "The SentencePiece proto declares no end-of-sequence "
                    "piece (eos_id=-1). Pass `end_token=` with the piece to "
                    "append to every caption. Received: end_token=None"
                )
            end_token = processor.id_to_piece(end_id)
        pad_token = self._requested_pad_token
        if pad_token is None:
            pad_id = processor.pad_id()
            pad_token = processor.id_to_piece(pad_id) if pad_id >= 0 else None
            pad_token = pad_token or end_token
        self.end_token = end_token
        self.pad_token = pad_token

    def tokenize(self, inputs):
        if self.normalize:
            inputs = normalize_captions(inputs, self.remove_punctuation)
        return super().tokenize(inputs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "end_token": self._requested_end_token,
                "pad_token": self._requested_pad_token,
                "normalize": self.normalize,
                "remove_punctuation": self.remove_punctuation,
            }
        )
        return config
