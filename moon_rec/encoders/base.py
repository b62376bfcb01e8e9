"""The one encoder interface of MOON: text query, image or product -> one vector.

Every output is L2-normalised at the full dimension D; ``matryoshka(x, dim)`` gives the
renormalised prefix that a consumer of a smaller size uses. A checkpoint directory holds:

    moon_encoder.json   {"config": EncoderConfig, "model_version": str, "format": 1}
    backbone/           the `transformers` model (config.json + model.safetensors)
    heads.safetensors   projection / fusion heads
    tokenizer.json      the word-piece tokenizer trained on the catalog, or, with a
    text_tower/         pretrained text tower: that `transformers` model and its own
                        tokenizer (a model folder ``encoder.text_tower`` can load again)

A text-only product (a catalog without photos, such as MovieLens) is encoded from its text
alone: ``encode_product(texts, None)`` with ``product_text(title, attributes)``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from moon_rec import runtime
from moon_rec.data.errors import DataError
from moon_rec.encoders.backbones import FrozenTrunkCache, is_frozen
from moon_rec.encoders.config import EncoderConfig
from moon_rec.encoders.tokenizer import MoonTokenizer, PretrainedTokenizer, TextTokenizer

META_FILE = "moon_encoder.json"
HEADS_FILE = "heads.safetensors"
BACKBONE_DIR = "backbone"
FORMAT_VERSION = 1
# Config fields that say where pretrained weights first came from: the weights themselves
# are hashed, so these stay out of model_version.
PROVENANCE_FIELDS = {"text_tower", "text_tower_init", "pretrained", "pretrained_init",
                     "image_tower", "image_tower_init", "image_tower_arch"}

E = TypeVar("E", bound="MoonEncoder")


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence `transformers` progress bars and its warnings while saving / loading: saving
    a config builds the library's default sub-configs, whose token ids (49406/49407) do not
    fit their default vocabulary and log a spurious warning every time."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def matryoshka(x: torch.Tensor, dim: int) -> torch.Tensor:
    """The first ``dim`` coordinates of ``x`` [N, D], renormalised to unit length [N, dim]."""
    if dim <= 0 or dim > x.shape[-1]:
        raise ValueError(f"matryoshka dim {dim} outside 1..{x.shape[-1]}")
    return F.normalize(x[..., :dim], dim=-1)


def product_text(title: str, attributes: str | None) -> str:
    """What a text-only product (no catalog photo) is encoded from: its title, then its
    attributes (``"Toy Story (1995). year: 1995; genres: Animation, Comedy"``)."""
    extra = (attributes or "").strip()
    return f"{title.strip()}. {extra}" if extra else title.strip()


def check_images(images: torch.Tensor | None, image_size: int, *, field: str = "image") -> None:
    """Reject what ``encode_image`` cannot take, naming the field.

    Raises:
        DataError: missing images, wrong rank/channels/size, values outside [0, 1].
    """
    if images is None:
        raise DataError("missing image", column=field)
    if not isinstance(images, torch.Tensor):
        raise DataError(f"expected a float tensor [N, 3, H, W], got {type(images).__name__}",
                        column=field)
    if images.ndim != 4 or images.shape[1] != 3:
        raise DataError(f"expected shape [N, 3, H, W], got {tuple(images.shape)}", column=field)
    h, w = int(images.shape[2]), int(images.shape[3])
    if (h, w) != (image_size, image_size):
        raise DataError(
            f"wrong image size {h}x{w}, the encoder takes {image_size}x{image_size}", column=field
        )
    if not images.is_floating_point():
        raise DataError(f"expected float pixels in [0, 1], got {images.dtype}", column=field)
    if images.numel() and (float(images.min()) < -1e-3 or float(images.max()) > 1 + 1e-3):
        raise DataError("pixel values outside [0, 1]", column=field)


def images_to_tensor(
    images: Sequence[np.ndarray | None], image_size: int, *, field: str = "image"
) -> torch.Tensor:
    """Stack (H, W, 3) uint8 arrays into a float tensor [N, 3, H, W] in [0, 1].

    Raises:
        DataError: naming ``field`` and the row of a missing or wrongly sized image.
    """
    out = torch.empty((len(images), 3, image_size, image_size), dtype=torch.float32)
    for i, a in enumerate(images):
        if a is None:
            raise DataError("missing image", column=field, row=i)
        if a.shape != (image_size, image_size, 3):
            raise DataError(
                f"wrong image size {a.shape}, expected ({image_size}, {image_size}, 3)",
                column=field, row=i,
            )
        out[i] = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0
    return out


class MoonEncoder(nn.Module, ABC):
    """Maps a text query, an image, or a product (title + image) to one vector in R^D.

    Subclasses implement ``_text``, ``_image`` and ``_product`` on validated inputs and
    return un-normalised [N, D] tensors; this class validates, normalises and handles
    checkpoints. The ``encode_*`` methods keep autograd (training uses them); wrap them in
    ``torch.inference_mode()`` for batch embedding.

    Args:
        config: the architecture.
        tokenizer: the catalog word-piece tokenizer, or a pretrained text tower's own.
    """

    backbone_name: str = ""

    def __init__(self, config: EncoderConfig, tokenizer: TextTokenizer) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        # set by the trainer while a pretrained text tower is frozen (a FrozenTrunkCache of
        # its pooled output per text); not part of the weights
        self.text_feature_cache: FrozenTrunkCache | None = None

    def train(self: E, mode: bool = True) -> E:
        """A frozen pretrained text tower (no trainable parameter) stays in eval mode: a
        fixed feature extractor, without dropout, whose output per text can be cached."""
        super().train(mode)
        tower = self.text_tower_module()
        if mode and tower is not None and is_frozen(tower):
            tower.eval()
        return self

    # -- the interface ---------------------------------------------------------------
    @property
    def dims(self) -> tuple[int, ...]:
        return tuple(self.config.dims)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Text queries (or titles) -> [N, D], L2-normalised."""
        self._check_texts(texts, "text")
        return F.normalize(self._text(list(texts)), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images float [N, 3, H, W] in [0, 1] -> [N, D], L2-normalised."""
        check_images(images, self.config.image_size)
        return F.normalize(self._image(images.to(self.device)), dim=-1)

    def encode_product(self, titles: Sequence[str], images: torch.Tensor | None) -> torch.Tensor:
        """Products (title + catalog image) -> [N, D], L2-normalised.

        ``images`` None: text-only products (no catalog photo), encoded from ``titles``
        alone, which should then be ``product_text(title, attributes)``.
        """
        self._check_texts(titles, "title")
        if images is None:
            return F.normalize(self._text(list(titles)), dim=-1)
        check_images(images, self.config.image_size)
        if len(titles) != images.shape[0]:
            raise DataError(
                f"{len(titles)} titles but {images.shape[0]} images", column="title"
            )
        return F.normalize(self._product(list(titles), images.to(self.device)), dim=-1)

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One call for training under DDP: any of ``text`` (list[str]), ``image``
        (Tensor[N,3,H,W]) and ``product`` ((titles, Tensor or None: text-only)) -> the same
        keys, [N, D] each."""
        out: dict[str, torch.Tensor] = {}
        if inputs.get("text"):
            out["text"] = self.encode_text(inputs["text"])
        if inputs.get("image") is not None:
            out["image"] = self.encode_image(inputs["image"])
        if inputs.get("product") is not None:
            titles, imgs = inputs["product"]
            out["product"] = self.encode_product(titles, imgs)
        extra = self.auxiliary_loss(inputs)
        if extra is not None:
            out["aux_loss"] = extra
        return out

    def auxiliary_loss(self, inputs: dict[str, Any]) -> torch.Tensor | None:
        """A backbone-specific extra objective (the MLLM's title generation), or None."""
        return None

    @staticmethod
    def _check_texts(texts: Sequence[str], field: str) -> None:
        if texts is None or isinstance(texts, str):
            raise DataError("expected a list of strings", column=field)
        for i, t in enumerate(texts):
            if t is None:
                raise DataError("missing text", column=field, row=i)
            if not isinstance(t, str) or not t.strip():
                raise DataError("empty text", column=field, row=i)

    @abstractmethod
    def _text(self, texts: list[str]) -> torch.Tensor: ...

    @abstractmethod
    def _image(self, images: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def _product(self, titles: list[str], images: torch.Tensor) -> torch.Tensor: ...

    # -- checkpoints -----------------------------------------------------------------
    @abstractmethod
    def _backbone_module(self) -> Any:
        """The `transformers` PreTrainedModel saved under backbone/."""

    def _pretrained_parts(self) -> dict[str, Any]:
        """The `transformers` models of the checkpoint, by sub-folder (default: backbone/)."""
        return {BACKBONE_DIR: self._backbone_module()}

    def pretrained_text_parameters(self) -> list[nn.Parameter]:
        """The parameters of a pretrained text tower (the trainer may give them their own
        learning rate); [] when the text side was built from scratch."""
        return []

    def pretrained_image_parameters(self) -> list[nn.Parameter]:
        """The parameters of a pretrained image side (its own learning rate, or frozen);
        [] when the image side was built from scratch."""
        return []

    def image_blocks(self) -> list[nn.Module]:
        """The pretrained image trunk's stages in input order (stem first), for freezing
        the first k; [] when there is none."""
        return []

    def text_tower_module(self) -> nn.Module | None:
        """The separate pretrained text tower (a `transformers` model, mean-pooled), or
        None."""
        return None

    def image_tower_module(self) -> Any:
        """The separate pretrained image tower (an ``ImageTower``, where a frozen trunk's
        features can be cached), or None."""
        return None

    @abstractmethod
    def _head_modules(self) -> dict[str, nn.Module]:
        """Modules outside the backbone, saved in heads.safetensors."""

    @classmethod
    @abstractmethod
    def _build(cls: type[E], config: EncoderConfig, tokenizer: TextTokenizer,
               backbone: Any = None) -> E:
        """Construct (``backbone`` None: freshly initialised from config)."""

    @property
    def model_version(self) -> str:
        """Short hash of config + tokenizer + weights: identical models have identical
        versions. The text tower's source path is left out (a checkpoint carries its copy
        of the tower; where it first came from, and whether its weights started pretrained or
        random, does not change the model: its weights are hashed)."""
        h = hashlib.sha256()
        h.update(self.config.model_dump_json(exclude=PROVENANCE_FIELDS).encode())
        h.update(self.tokenizer.fingerprint().encode())
        for name, t in sorted(self.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().float().numpy().tobytes())
        return h.hexdigest()[:12]

    def save_pretrained(self, path: str | Path) -> Path:
        """Write a self-contained checkpoint directory (atomically replaced)."""
        path = Path(path)
        with runtime.atomic_dir(path) as tmp:
            with quiet_transformers():
                for folder, part in self._pretrained_parts().items():
                    inner = getattr(part, "model", part)  # a model, or a wrapper of one
                    _unset_sub_config_dtypes(getattr(inner, "config", None))
                    part.save_pretrained(tmp / folder)
            heads = {
                f"{name}.{k}": v.detach().cpu().contiguous()
                for name, mod in self._head_modules().items()
                for k, v in mod.state_dict().items()
            }
            save_file(heads, str(tmp / HEADS_FILE))
            self.tokenizer.save(tmp)
            meta = {
                "format": FORMAT_VERSION,
                "backbone": self.backbone_name,
                "config": json.loads(self.config.model_dump_json()),
                "model_version": self.model_version,
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> MoonEncoder:
        """Load a checkpoint written by ``save_pretrained`` (either backbone). ``path`` may
        also be a training stage's run folder, whose ``encoder/`` holds the checkpoint.

        Raises:
            FileNotFoundError: no checkpoint at ``path``.
        """
        path = Path(path)
        if not (path / META_FILE).exists() and (path / "encoder" / META_FILE).exists():
            path = path / "encoder"
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"no MOON encoder checkpoint at {path} (missing {META_FILE})")
        meta = json.loads(meta_path.read_text())
        config = EncoderConfig.model_validate(meta["config"])
        impl = encoder_class(config.backbone, config)
        if cls is not MoonEncoder and not issubclass(impl, cls):
            raise ValueError(f"{path} holds a {config.backbone} encoder, not {cls.__name__}")
        with quiet_transformers():
            tokenizer: TextTokenizer = (PretrainedTokenizer.load(path) if config.tokenizer_folder
                                        else MoonTokenizer.load(path))
            model = impl._load_backbone(config, tokenizer, path / BACKBONE_DIR)
        heads = load_file(str(path / HEADS_FILE))
        for name, mod in model._head_modules().items():
            sd = {k[len(name) + 1:]: v for k, v in heads.items() if k.startswith(name + ".")}
            mod.load_state_dict(sd)
        model.eval()
        saved = meta.get("model_version")
        if saved and saved != model.model_version:
            raise ValueError(
                f"{path}: weights do not match the saved model_version {saved} "
                f"(got {model.model_version}); the checkpoint is corrupt"
            )
        return model

    @classmethod
    @abstractmethod
    def _load_backbone(cls: type[E], config: EncoderConfig, tokenizer: TextTokenizer,
                       backbone_dir: Path) -> E: ...


def _unset_sub_config_dtypes(config: Any) -> None:
    """Unset the ``dtype`` of each sub-config (text_config, vision_config) of a composite
    config: ``from_pretrained`` sets them, a model built from its config leaves them
    unset, so without this a loaded-then-saved checkpoint (a resumed run) writes another
    ``config.json`` than the first save (the model's own ``dtype`` stays)."""
    for name in getattr(config, "sub_configs", {}) or {}:
        sub = getattr(config, name, None)
        if sub is not None and getattr(sub, "dtype", None) is not None:
            sub.dtype = None


def encoder_class(backbone: str, config: EncoderConfig | None = None) -> type[MoonEncoder]:
    """The implementation of a backbone name (a dual tower with a pretrained image side,
    ``config.pretrained_towers``, is a ``PretrainedTowersEncoder``)."""
    if backbone == "dual_tower" and config is not None and config.pretrained_towers:
        from moon_rec.encoders.pretrained import PretrainedTowersEncoder

        return PretrainedTowersEncoder
    if backbone == "dual_tower":
        from moon_rec.encoders.dual_tower import DualTowerEncoder

        return DualTowerEncoder
    if backbone == "mllm":
        from moon_rec.encoders.mllm import MllmEncoder

        return MllmEncoder
    raise ValueError(f"unknown backbone {backbone!r} (dual_tower | mllm)")


def build_encoder(config: EncoderConfig, tokenizer: TextTokenizer) -> MoonEncoder:
    """A freshly initialised encoder (seeded by ``config.seed``); its pretrained parts
    (``text_tower``, ``image_tower``, ``pretrained``) are read from their local paths."""
    torch.manual_seed(config.seed)
    with quiet_transformers():
        return encoder_class(config.backbone, config)._build(config, tokenizer)


def make_tokenizer(config: EncoderConfig, texts: Iterable[str]) -> TextTokenizer:
    """The tokenizer of a fresh encoder: the pretrained text tower's own (``texts`` unused)
    (or a pretrained backbone's: ``config.tokenizer_folder``), or a word-piece vocabulary of
    ``config.vocab_size`` trained on ``texts``."""
    if config.tokenizer_folder is not None:
        with quiet_transformers():
            return PretrainedTokenizer.from_path(config.tokenizer_folder)
    return MoonTokenizer.train(texts, vocab_size=config.vocab_size)
