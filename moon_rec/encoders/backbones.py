"""Pretrained image backbones from local checkpoints, and their image preprocessing.

The encoder receives catalog photos already prepared by ``moon_rec.data.images.prepare_image``
(square uint8 RGB, ``EncoderConfig.image_size`` pixels, as float [N, 3, S, S] in [0, 1]). A
pretrained backbone wants its own resolution and normalisation: ``ImageProcessing`` reads
them from the checkpoint's image processor (``preprocessor_config.json``, through
`transformers`' ``AutoImageProcessor``) and applies them with torch ops inside the encoder,
so one preparation still serves every consumer and gradients flow through.

What loads from where (all offline, ``local_files_only``):

- ``load_dual_encoder(folder)``: a full Hugging Face dual encoder (``CLIPModel``,
  ``SiglipModel``, or any ``AutoModel`` with ``get_image_features`` / ``get_text_features``)
  and its image processor (its tokenizer: ``PretrainedTokenizer.from_path``).
- ``ImageTower.from_source(path)``: a Hugging Face vision model folder (ViT, DINOv2,
  ConvNeXt, SigLIP vision, ...: ``AutoModel`` whose input is ``pixel_values``) with its
  image processor, or a CNN state-dict file (EfficientNet-Lite, ``moon_rec.encoders.cnn``).

Errors name the path: a missing folder or file, a folder that is not a `transformers`
checkpoint, a checkpoint of the wrong kind (a text model as the image tower, a vision model
as the dual encoder), missing image-processor files.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from moon_rec.encoders.cnn import (
    HEAD_STAGE,
    LITE_MEAN,
    LITE_STD,
    LITE_VARIANTS,
    EfficientNetLite,
    load_efficientnet_lite,
)

PROCESSOR_FILE = "preprocessor_config.json"
CNN_META = "cnn.json"
CNN_WEIGHTS = "model.safetensors"
TOWER_META = "moon_image_tower.json"
PROCESSING_FILE = "processing.json"  # a MOON checkpoint's backbone/: its image processing


def _check_model_folder(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} {path}: no such folder")
    if not path.is_dir():
        raise ValueError(f"{what} {path}: a file, not a transformers model folder")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{what} {path}: not a transformers model folder (no config.json)")


@dataclass(frozen=True)
class ImageProcessing:
    """Resize, centre-crop and normalise square [0, 1] images as a checkpoint was trained.

    Args:
        resize: side the image is resized to (square inputs stay square).
        crop: side of the centre crop after resizing (== ``resize``: none).
        mean / std: per-channel normalisation of [0, 1] pixels.
        mode: ``bilinear`` or ``bicubic`` (the processor's resampling; antialiased).

    Example:
        >>> p = ImageProcessing(resize=32, crop=32, mean=(0.5,) * 3, std=(0.5,) * 3)
        >>> p(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 3, 32, 32])
    """

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    mode: str = "bilinear"

    @classmethod
    def from_processor(cls, proc: Any, where: Path) -> ImageProcessing:
        """Read size / crop / mean / std of a `transformers` image processor."""
        size = getattr(proc, "size", None) or {}
        if not isinstance(size, dict):
            size = dict(size)
        if size.get("height"):
            side = int(size["height"])
        elif size.get("shortest_edge"):
            side = int(size["shortest_edge"])
        else:
            raise ValueError(f"{where / PROCESSOR_FILE}: no image size (size: {size})")
        resize, crop = side, side
        crop_size = getattr(proc, "crop_size", None)
        if getattr(proc, "do_center_crop", False) and crop_size:
            crop = int(dict(crop_size).get("height") or side)
        crop_pct = getattr(proc, "crop_pct", None)
        if crop_pct and "shortest_edge" in size and side < 384:  # ConvNeXt's crop_pct rule
            resize, crop = int(side / float(crop_pct)), side
        do_norm = getattr(proc, "do_normalize", True)
        mean = tuple(float(v) for v in (proc.image_mean if do_norm else (0.0, 0.0, 0.0)))
        std = tuple(float(v) for v in (proc.image_std if do_norm else (1.0, 1.0, 1.0)))
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"{where / PROCESSOR_FILE}: image_mean / image_std need 3 channels")
        resample = int(getattr(proc, "resample", 2) or 2)
        mode = "bicubic" if resample == 3 else "bilinear"
        return cls(resize, crop, (mean[0], mean[1], mean[2]), (std[0], std[1], std[2]), mode)

    @classmethod
    def from_folder(cls, path: str | Path) -> ImageProcessing:
        """The image processor of a local checkpoint folder.

        A MOON checkpoint's ``backbone/`` holds the processing it ran with instead
        (``processing.json``, at its ``image_resolution``).

        Raises:
            FileNotFoundError: no ``preprocessor_config.json`` in ``path``.
        """
        from transformers import AutoImageProcessor

        p = Path(path)
        if (p / PROCESSING_FILE).is_file() and not (p / PROCESSOR_FILE).is_file():
            # a MOON checkpoint's backbone/: the processing it ran with
            return cls(**_tuples(json.loads((p / PROCESSING_FILE).read_text())))
        if not (p / PROCESSOR_FILE).is_file():
            raise FileNotFoundError(f"{p}: no {PROCESSOR_FILE} (the image processor's size, "
                                    "mean and std); save it beside the model "
                                    "(processor.save_pretrained)")
        try:
            proc = AutoImageProcessor.from_pretrained(str(p), local_files_only=True,
                                                      backend="pil")
        except Exception as exc:
            raise ValueError(f"{p / PROCESSOR_FILE}: not a readable image processor "
                             f"({exc.__class__.__name__}: {str(exc)[:200]})") from exc
        return cls.from_processor(proc, p)

    def at(self, resolution: int) -> ImageProcessing:
        """The same processing run at ``resolution`` pixels (0: unchanged): resize and crop
        scaled together."""
        if resolution <= 0 or resolution == self.crop:
            return self
        resize = max(resolution, round(self.resize * resolution / self.crop))
        return ImageProcessing(resize, resolution, self.mean, self.std, self.mode)

    @property
    def out_size(self) -> int:
        return self.crop

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] in [0, 1] -> normalised [N, 3, crop, crop]."""
        x = images
        if x.shape[-1] != self.resize or x.shape[-2] != self.resize:
            x = F.interpolate(x, size=(self.resize, self.resize), mode=self.mode,
                              align_corners=False, antialias=True).clamp(0.0, 1.0)
        if self.crop != self.resize:
            top = (self.resize - self.crop) // 2
            x = x[..., top: top + self.crop, top: top + self.crop]
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std


def _features(out: Any) -> torch.Tensor:
    """A ``get_*_features`` result (a tensor, or a model output whose pooler_output is the
    projected feature) -> [N, P]."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise ValueError("get_*_features returned no pooled output")
    assert isinstance(pooled, torch.Tensor)
    return pooled


def load_dual_encoder(path: str | Path, init: str = "pretrained") -> tuple[Any, ImageProcessing]:
    """A full Hugging Face dual encoder from a local folder and its image processing;
    ``init="random"``: the same architecture with fresh weights.

    Raises:
        FileNotFoundError / ValueError: naming ``path`` (see the module docstring).
    """
    from transformers import AutoConfig, AutoModel

    p = Path(path)
    _check_model_folder(p, "dual encoder")
    cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
    model = (AutoModel.from_config(cfg) if init == "random"
             else AutoModel.from_pretrained(str(p), local_files_only=True))
    if not (callable(getattr(model, "get_image_features", None))
            and callable(getattr(model, "get_text_features", None))):
        raise ValueError(f"dual encoder {p}: a {cfg.model_type} model has no "
                         "get_image_features / get_text_features (not a dual encoder such as "
                         "CLIP or SigLIP)")
    processing = ImageProcessing.from_folder(p)
    return model, processing


def dual_encoder_parts(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(text parameters, image parameters) of a dual encoder, by module name: ``text*``
    (text_model, text_projection) and ``vision*`` / ``visual*``; the rest (logit scale and
    bias) belongs to neither."""
    text, image = [], []
    for name, p in model.named_parameters():
        top = name.split(".", 1)[0]
        if top.startswith("text"):
            text.append(p)
        elif top.startswith(("vision", "visual")):
            image.append(p)
    return text, image


def dual_image_features(model: Any, pixels: torch.Tensor, native: bool) -> torch.Tensor:
    """[N, 3, R, R] normalised -> the dual encoder's projected image features [N, P]."""
    kwargs = {} if native else {"interpolate_pos_encoding": True}
    return _features(model.get_image_features(pixel_values=pixels, **kwargs))


def dual_text_features(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Token ids / mask [N, L] -> the dual encoder's projected text features [N, P]."""
    return _features(model.get_text_features(input_ids=ids, attention_mask=mask))


def dual_projection_dim(model: Any) -> int:
    cfg = model.config
    dim = getattr(cfg, "projection_dim", None)
    if dim:
        return int(dim)
    return int(cfg.vision_config.hidden_size)


def native_size(model: Any) -> int | None:
    """The resolution a `transformers` vision model's position embeddings were built for."""
    cfg = getattr(model.config, "vision_config", model.config)
    size = getattr(cfg, "image_size", None)
    return int(size) if isinstance(size, int) else None


def longest_layer_list(model: nn.Module) -> list[nn.Module]:
    """The blocks of a transformer / CNN trunk: its longest ``nn.ModuleList``."""
    lists: list[nn.ModuleList] = [m for m in model.modules()
                                  if isinstance(m, nn.ModuleList) and len(m) > 1]
    if not lists:
        return []
    longest = max(range(len(lists)), key=lambda i: len(lists[i]))
    return list(lists[longest])


class FrozenTrunkCache:
    """What a frozen image trunk computes, by photo: the trunk's output (all of it frozen),
    or a CNN's map after its frozen stem and first blocks (``frozen_image_blocks``) with the
    pooled statistics of the stages below. Keyed by the photo's pixels (a 16-byte BLAKE2b
    of the float tensor), so a catalog photo, a query photo or a fixed augmented view
    (``augment_views``) runs through the frozen part once per stage; a fresh random
    augmentation never hits. The trainer sets one on ``ImageTower.feature_cache`` for a
    stage and drops it after. A frozen trunk is a fixed function (a CNN keeps its batch-norm
    statistics; a transformers model's dropout would be the only randomness, and a hit
    returns the first draw's output).

    Args:
        max_bytes: stop adding rows past this size (the rows already in stay; the rest are
            computed each time).
    """

    def __init__(self, max_bytes: int = 6 << 30) -> None:
        self._rows: dict[bytes, tuple[torch.Tensor, ...]] = {}
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._rows)

    # the process's caches by role ("image", "text"): (what the frozen part computes from, cache)
    _shared: ClassVar[dict[str, tuple[str, FrozenTrunkCache]]] = {}

    @classmethod
    def shared(cls, tower: ImageTower) -> FrozenTrunkCache:
        """The process's cache for this frozen trunk: the same one again while the frozen
        part is unchanged (so stage 1 reuses what pretraining computed), a new one (the old
        dropped) otherwise."""
        return cls._shared_for("image", tower.frozen_digest())

    @classmethod
    def shared_text(cls, tower: nn.Module) -> FrozenTrunkCache:
        """The process's cache for this frozen text tower (keyed by its weights and
        buffers), kept across stages like ``shared``."""
        return cls._shared_for("text", module_digest(tower))

    @classmethod
    def _shared_for(cls, role: str, key: str) -> FrozenTrunkCache:
        held = cls._shared.get(role)
        if held is None or held[0] != key:
            cls._shared.pop(role, None)  # free the old rows first
            cls._shared[role] = (key, cls())
        return cls._shared[role][1]

    @staticmethod
    def keys(images: torch.Tensor, tag: str) -> list[bytes]:
        flat = images.detach().to("cpu", torch.float32).contiguous().reshape(images.shape[0], -1)
        arr = flat.numpy()
        return [hashlib.blake2b(arr[i].tobytes(), digest_size=16, person=tag.encode()[:16]).digest()
                for i in range(arr.shape[0])]

    @staticmethod
    def token_keys(ids: torch.Tensor, mask: torch.Tensor) -> list[bytes]:
        """One key per tokenized text: its unpadded token ids (a title padded to two batch
        lengths is one key)."""
        ids64 = ids.detach().to("cpu", torch.int64)
        keep = mask.detach().to("cpu").bool()
        return [hashlib.blake2b(ids64[i][keep[i]].numpy().tobytes(), digest_size=16,
                                person=b"text").digest() for i in range(ids64.shape[0])]

    def get(self, images: torch.Tensor,
            compute: Callable[[torch.Tensor], tuple[torch.Tensor, ...]],
            tag: str) -> tuple[torch.Tensor, ...]:
        """The rows of ``compute(images)`` (batched tensors), computed (without gradients)
        for the photos not seen before under ``tag`` only."""
        return self.rows(self.keys(images, tag), lambda idx: compute(images[idx]),
                         images.device)

    def rows(self, keys: list[bytes],
             compute: Callable[[list[int]], tuple[torch.Tensor, ...]],
             device: torch.device) -> tuple[torch.Tensor, ...]:
        """The rows under ``keys``, batched; ``compute(positions)`` (without gradients)
        gives the rows of the keys not seen before, in the order of ``positions``."""
        fresh: dict[bytes, tuple[torch.Tensor, ...]] = {}
        miss: list[int] = []
        for i, k in enumerate(keys):  # a key twice in one call is computed once
            if k not in self._rows and k not in fresh:
                fresh[k] = ()
                miss.append(i)
        if miss:
            with torch.no_grad():
                out = compute(miss)
            for j, i in enumerate(miss):
                row = tuple(t[j].detach().clone() for t in out)
                fresh[keys[i]] = row
                size = sum(t.numel() * t.element_size() for t in row)
                if self.bytes + size <= self.max_bytes:
                    self._rows[keys[i]] = row
                    self.bytes += size
        self.misses += len(miss)
        self.hits += len(keys) - len(miss)  # a repeat within the call counts as a hit
        rows = [self._rows.get(k) or fresh[k] for k in keys]
        return tuple(torch.stack([r[p] for r in rows]).to(device)
                     for p in range(len(rows[0])))

    def stats(self, noun: str) -> dict[str, float]:
        """For a stage summary: rows held (as ``noun``), hits, misses, MiB."""
        return {noun: len(self), "hits": self.hits, "misses": self.misses,
                "mib": round(self.bytes / 2**20, 1)}


def is_frozen(module: nn.Module) -> bool:
    """No trainable parameter: a fixed function of its input (what a cache may hold)."""
    return not any(p.requires_grad for p in module.parameters())


def module_digest(module: nn.Module) -> str:
    """A digest of a module's weights and buffers (what a frozen module computes from)."""
    h = hashlib.blake2b(digest_size=16)
    for t in module.state_dict().values():
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def mean_pooled_text(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                     cache: FrozenTrunkCache | None = None) -> torch.Tensor:
    """A `transformers` text model's last hidden states, mean-pooled over the mask
    [N, hidden]. With ``cache`` and the model frozen (no trainable parameter), each text's
    row is computed once (``FrozenTrunkCache.token_keys``) and read back after."""
    def pooled(idx: list[int] | slice) -> tuple[torch.Tensor]:
        hidden = model(input_ids=ids[idx], attention_mask=mask[idx]).last_hidden_state
        m = mask[idx].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * m).sum(1) / m.sum(1).clamp_min(1.0),)

    if cache is not None and is_frozen(model):
        return cache.rows(FrozenTrunkCache.token_keys(ids, mask), pooled, ids.device)[0]
    return pooled(slice(None))[0]


class ImageTower(nn.Module):
    """A pretrained image backbone beside a separate text tower: [N, 3, S, S] in [0, 1] ->
    pooled features [N, feature_dim], its own preprocessing applied inside.

    Args:
        model: a `transformers` vision model (``pixel_values`` in) or an ``EfficientNetLite``.
        processing: the checkpoint's preprocessing (``ImageProcessing.at`` the resolution).
        pool: ``mean`` of the last hidden states / feature map, or ``head`` (the model's own
            pooled output; a CNN's is the mean).
        stages: a CNN only: pool these ``stage_maps`` (0 the stem, 1-7 the stages, 8 the
            head) by their channel means and standard deviations, concatenated, instead of
            the head's mean (a multi-scale look: colour and pattern statistics live in the
            middle stages); the trunk above the last one is not run. () : the head's mean.

    A CNN keeps its batch-norm statistics (ImageNet's) while training: small batches of one
    catalog would skew them, and they are not parameters a learning rate reaches.
    """

    def __init__(self, model: nn.Module, processing: ImageProcessing, pool: str = "mean",
                 stages: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.model: Any = model  # a transformers vision model or an EfficientNetLite
        self.processing = processing
        self.pool = pool
        self.is_cnn = isinstance(model, EfficientNetLite)
        if stages and not self.is_cnn:
            raise ValueError(f"image_tower_stages {list(stages)}: a CNN option, not for a "
                             f"{type(model).__name__}")
        if stages and (list(stages) != sorted(set(stages)) or stages[0] < 0
                       or stages[-1] > HEAD_STAGE):
            raise ValueError(f"image_tower_stages {list(stages)}: ascending stage numbers in "
                             f"0..{HEAD_STAGE}")
        self.stages = tuple(stages)
        self._interpolate = False
        if not self.is_cnn:
            native = native_size(model)
            params = inspect.signature(model.forward).parameters
            self._interpolate = (native is not None and native != processing.out_size
                                 and "interpolate_pos_encoding" in params)
        self.feature_dim = self._feature_dim()
        # set by the trainer while (part of) the trunk is frozen; not part of the weights
        self.feature_cache: FrozenTrunkCache | None = None

    def _feature_dim(self) -> int:
        if self.is_cnn:
            if self.stages:
                channels = self.model.stage_channels()
                return sum(2 * channels[k] for k in self.stages)
            return int(self.model._conv_head.out_channels)
        cfg = self.model.config
        hidden = getattr(cfg, "hidden_sizes", None)
        if hidden:
            return int(hidden[-1])
        return int(cfg.hidden_size)

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        if self.is_cnn:
            for m in self.model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def blocks(self) -> list[nn.Module]:
        """The trunk's stages in input order (stem first), for per-block freezing."""
        if self.is_cnn:
            net = self.model
            return [nn.ModuleList([net._conv_stem, net._bn0]), *net._blocks]
        embeddings = [m for n, m in self.model.named_children() if "embed" in n]
        return [*embeddings, *longest_layer_list(self.model)]

    def frozen_prefix(self) -> int:
        """How many leading ``blocks`` (the stem first) have no trainable parameter."""
        n = 0
        for block in self.blocks():
            if not is_frozen(block):
                break
            n += 1
        return n

    def cacheable(self) -> str | None:
        """What a ``FrozenTrunkCache`` can hold of this tower as it is frozen now: ``all``
        (no trainable parameter: its output), ``prefix`` (a CNN's frozen stem and first
        ``frozen_prefix() - 1`` blocks: their map), or None."""
        if is_frozen(self):
            return "all"
        return "prefix" if self.is_cnn and self.frozen_prefix() else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cache = self.feature_cache
        part = None if cache is None else self.cacheable()
        if cache is not None and part == "all":
            return cache.get(images, lambda x: (self._features(x),), "all")[0]
        if cache is not None and part == "prefix":  # cache the frozen blocks, run the rest
            n = self.frozen_prefix() - 1
            pooled, x = cache.get(images, lambda im: self._cnn_prefix(im, n), f"cnn{n}")
            return self._cnn_from(x, n, pooled)
        return self._features(images)

    def _pooled(self, maps: list[tuple[int, torch.Tensor]]) -> list[torch.Tensor]:
        return [t for k, m in maps if k in self.stages
                for t in (m.mean((2, 3)), m.std((2, 3), correction=0))]

    def _cnn_prefix(self, images: torch.Tensor, blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Photos -> (the pooled statistics of the chosen stages that end within the stem
        and the first ``blocks`` blocks [N, d] (d may be 0), the map after them)."""
        stem = self.model.stem(self.processing(images))
        x, maps = self.model.run_blocks(stem, 0, blocks)
        parts = self._pooled([(0, stem), *maps])
        pooled = torch.cat(parts, 1) if parts else stem.new_zeros((stem.shape[0], 0))
        return pooled, x

    def _cnn_from(self, x: torch.Tensor, start: int, pooled: torch.Tensor) -> torch.Tensor:
        """The CNN's output from the map after ``start`` blocks (and the pooled statistics
        of the stages below it)."""
        net = self.model
        if not self.stages:
            x, _ = net.run_blocks(x, start, len(net._blocks))
            return net.head(x).mean((2, 3))
        last = self.stages[-1]
        parts = [pooled] if pooled.shape[1] else []
        x, maps = net.run_blocks(x, start, max(start, net.stage_stop(last)))
        if last >= HEAD_STAGE:
            maps.append((HEAD_STAGE, net.head(x)))
        return torch.cat([*parts, *self._pooled(maps)], 1)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        if self.is_cnn:
            pooled, x = self._cnn_prefix(images, 0)
            return self._cnn_from(x, 0, pooled)
        pixels = self.processing(images)
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        out = self.model(pixel_values=pixels, **kwargs)
        if self.pool == "head":
            head = getattr(out, "pooler_output", None)
            if head is None:
                raise ValueError(f"{type(self.model).__name__} has no pooled output; use "
                                 "vision_pool: mean")
            return torch.as_tensor(head).flatten(1)
        hidden: torch.Tensor = out.last_hidden_state
        return hidden.mean((2, 3)) if hidden.ndim == 4 else hidden.mean(1)

    def frozen_digest(self) -> str:
        """What the frozen part computes from: its weights and buffers, the preprocessing,
        the pooled stages and how many blocks are frozen (the key of a shared cache)."""
        n = self.frozen_prefix()
        whole = self.cacheable() == "all"
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps([asdict(self.processing), list(self.stages), self.pool, n, whole],
                            sort_keys=True, default=str).encode())
        for m in [self] if whole else self.blocks()[:n]:
            h.update(module_digest(m).encode())
        return h.hexdigest()

    # -- sources and checkpoints -------------------------------------------------------
    @classmethod
    def from_source(cls, path: str | Path, *, arch: str | None = None, init: str = "pretrained",
                    resolution: int = 0, pool: str = "mean",
                    stages: tuple[int, ...] = ()) -> ImageTower:
        """An image tower from a local source: a CNN state-dict file, a checkpoint's saved
        CNN folder (``cnn.json``), or a `transformers` vision model folder.

        Raises:
            FileNotFoundError / ValueError: naming ``path``.
        """
        p = Path(path)
        if p.is_file():
            cnn = load_efficientnet_lite(p, arch)
            if init == "random":
                cnn = EfficientNetLite(cnn.variant)
            cnn.drop_classifier()
            native = LITE_VARIANTS[cnn.variant][2]
            proc = ImageProcessing(native, native, LITE_MEAN, LITE_STD, "bilinear")
            return cls(cnn, proc.at(resolution), pool, stages)
        if (p / CNN_META).is_file() or (p / TOWER_META).is_file():  # a checkpoint's copy
            tower = cls.load(p)
            return cls(tower.model, tower.processing.at(resolution), pool, stages)
        _check_model_folder(p, "image tower")
        from transformers import AutoConfig, AutoModel

        cfg = AutoConfig.from_pretrained(str(p), local_files_only=True)
        model_cls: Any = AutoModel._model_mapping.get(type(cfg), None)
        if model_cls is None:
            raise ValueError(f"image tower {p}: {cfg.model_type} has no transformers AutoModel")
        if getattr(model_cls, "main_input_name", None) != "pixel_values":
            raise ValueError(f"image tower {p}: a {cfg.model_type} model takes "
                             f"{model_cls.main_input_name}, not images (not a vision model)")
        processing = ImageProcessing.from_folder(p)
        model = (AutoModel.from_config(cfg) if init == "random"
                 else AutoModel.from_pretrained(str(p), local_files_only=True))
        return cls(model, processing.at(resolution), pool, stages)

    def save(self, folder: str | Path) -> Path:
        """Write the tower so that ``ImageTower.load(folder)`` rebuilds it exactly: a
        `transformers` model folder with its preprocessing, or a CNN's weights and meta."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"processing": asdict(self.processing), "pool": self.pool,
                                "stages": list(self.stages)}
        if self.is_cnn:
            net = self.model
            assert isinstance(net, EfficientNetLite)
            sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
            save_file(sd, str(folder / CNN_WEIGHTS))
            meta.update(arch=net.variant, num_classes=net.num_classes)
            (folder / CNN_META).write_text(json.dumps(meta, indent=2))
        else:
            self.model.save_pretrained(str(folder))
            (folder / TOWER_META).write_text(json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> ImageTower:
        """Rebuild a tower written by ``save``."""
        from transformers import AutoModel

        folder = Path(folder)
        cnn_meta = folder / CNN_META
        if cnn_meta.is_file():
            meta = json.loads(cnn_meta.read_text())
            net = EfficientNetLite(meta["arch"], num_classes=int(meta["num_classes"]))
            net.load_state_dict(load_file(str(folder / CNN_WEIGHTS)), strict=True)
            return cls(net, ImageProcessing(**_tuples(meta["processing"])), meta["pool"],
                       tuple(meta.get("stages", ())))
        meta_path = folder / TOWER_META
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no saved image tower (missing {meta_path.name})")
        meta = json.loads(meta_path.read_text())
        model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        return cls(model, ImageProcessing(**_tuples(meta["processing"])), meta["pool"])


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
