"""The encoder trainer: one function runs one stage (pretrain, stage1, stage2).

Runs like real training: seeded (every batch is a pure function of seed, stage, step and
rank, so a resumed run sees the same batches), a tqdm bar with loss and throughput, a
checkpoint every ``checkpoint_every`` steps that carries the ``model_version``, resume from
the last checkpoint after a kill, and DDP under ``torchrun`` (gloo on CPU, nccl on CUDA)
with the other ranks' targets all-gathered as spatial negatives.

Run directory layout (``out``)::

    encoder/          the final MoonEncoder checkpoint (``MoonEncoder.from_pretrained``)
    state/            the last resumable checkpoint: encoder/ + trainer.pt
    train_log.jsonl   one JSON line per logged step (loss, lr, pairs/s, negatives)
    summary.json      stage, model_version, steps, seconds, pair counts, final loss
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from moon_rec import runtime
from moon_rec.data.schemas import attribute_values
from moon_rec.encoders import MoonEncoder, build_encoder, make_tokenizer
from moon_rec.encoders.backbones import FrozenTrunkCache, is_frozen
from moon_rec.encoders.inference import embed_products, resolve_checkpoint
from moon_rec.training.augment import ViewBank, user_photo_augment
from moon_rec.training.config import STAGES, StageConfig, TrainConfig
from moon_rec.training.data import WorldData, load_world
from moon_rec.training.losses import LOSSES, matryoshka_loss
from moon_rec.training.negatives import (
    CategoryHardNegatives,
    MinedHardNegatives,
    TemporalNegativeQueue,
    gather_ids,
    gather_with_local_grad,
)
from moon_rec.training.pairs import (
    KIND_NAMES,
    KINDS,
    TEXT_ONLY_KINDS,
    TEXT_QUERIES,
    PairSet,
    build_pairs,
    dedup_hardest,
    drop_short_texts,
    resample_categories,
    sample_batch,
)

log = logging.getLogger(__name__)


# -- batches ---------------------------------------------------------------------------


@dataclass
class Batch:
    """Encoder inputs of one step and where each query / target / hard negative lands in
    the concatenated output [text; image; product]."""

    inputs: dict[str, Any]
    query_index: torch.Tensor
    target_index: torch.Tensor
    hard_index: torch.Tensor
    target_ids: torch.Tensor
    target_spu: torch.Tensor
    hard_ids: torch.Tensor
    hard_spu: torch.Tensor
    merge_rows: torch.Tensor  # [B] bool: query is text-like (SPU variants not negatives)
    product_targets: torch.Tensor  # [B] bool: target is a product embedding (for the queue)

    def to(self, device: torch.device) -> Batch:
        """The index and id tensors on ``device`` (the encoder moves its own inputs)."""
        return Batch(self.inputs, *(getattr(self, f).to(device) for f in (
            "query_index", "target_index", "hard_index", "target_ids", "target_spu",
            "hard_ids", "hard_spu", "merge_rows", "product_targets")))


@dataclass
class _Slots:
    texts: list[str] = field(default_factory=list)
    images: list[torch.Tensor] = field(default_factory=list)
    n_images: int = 0
    titles: list[str] = field(default_factory=list)
    prod_images: list[torch.Tensor] = field(default_factory=list)
    slots: list[tuple[str, int]] = field(default_factory=list)

    def text(self, s: str) -> tuple[str, int]:
        self.texts.append(s)
        return ("text", len(self.texts) - 1)

    def image(self, x: torch.Tensor) -> tuple[str, int]:
        self.images.append(x)
        self.n_images += x.shape[0]
        return ("image", self.n_images - 1)

    def product(self, title: str, x: torch.Tensor | None) -> tuple[str, int]:
        """A product slot; ``x`` None: a text-only product (all of a batch's or none)."""
        self.titles.append(title)
        if x is not None:
            self.prod_images.append(x)
        return ("product", len(self.titles) - 1)


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0)


def _photos(data: WorldData, rows: slice | list[int] | np.ndarray) -> torch.Tensor:
    """Catalog photos of ``rows`` as float [n, 3, S, S] in [0, 1]."""
    if data.images is None:
        raise ValueError(f"{data.root} is a text-only world: no catalog photos")
    return _float(data.images[rows])


def _product_photo(data: WorldData, row: int) -> torch.Tensor | None:
    """The photo of a product slot: [1, 3, S, S], or None in a text-only world."""
    return None if data.images is None else _float(data.images[row: row + 1])


def assemble(
    data: WorldData,
    pairs: PairSet,
    idx: np.ndarray,
    g: torch.Generator,
    *,
    hard_rows: np.ndarray | None = None,
    caption: bool = False,
    views: ViewBank | None = None,
) -> Batch:
    """Build the encoder inputs of pairs ``idx`` (+ hard-negative catalog rows [B, k]);
    with ``views`` each user photo is one of its catalog photo's fixed views (picked by
    ``g``), else a fresh augmentation drawn from ``g``."""
    s = _Slots()
    aug_rows = [int(pairs.query_ref[i]) for i in idx if KINDS[KIND_NAMES[pairs.kind[i]]][0] == "aug"]
    augmented = torch.zeros(0)
    if aug_rows and views is not None:
        assert data.images is not None
        augmented = views.draw(data.images, aug_rows, g)
    elif aug_rows:
        augmented = user_photo_augment(_photos(data, aug_rows), g)
    a = 0
    q_slots, t_slots = [], []
    for i in idx:
        qm, tm = KINDS[KIND_NAMES[pairs.kind[i]]]
        ref, row = int(pairs.query_ref[i]), int(pairs.target_row[i])
        if qm == "text":
            q_slots.append(s.text(data.beh_text[ref]))
        elif qm == "title":
            q_slots.append(s.text(data.title[ref]))
        elif qm == "attributes":
            q_slots.append(s.text(data.attributes[ref]))
        elif qm == "photo":
            q_slots.append(s.image(_float(data.query_images[ref: ref + 1])))
        elif qm == "aug":
            q_slots.append(s.image(augmented[a: a + 1]))
            a += 1
        else:
            q_slots.append(s.product(data.product_titles[ref], _product_photo(data, ref)))
        if tm == "product":
            t_slots.append(s.product(data.product_titles[row], _product_photo(data, row)))
        elif tm == "image":
            t_slots.append(s.image(_photos(data, slice(row, row + 1))))
        else:
            t_slots.append(s.text(data.title[row]))
    h_slots = []
    hr = hard_rows[hard_rows >= 0] if hard_rows is not None else np.zeros(0, np.int64)
    for row in hr.tolist():
        h_slots.append(s.product(data.product_titles[row], _product_photo(data, row)))
    inputs: dict[str, Any] = {
        "text": s.texts,
        "image": torch.cat(s.images) if s.images else None,
        "product": ((s.titles, torch.cat(s.prod_images) if s.prod_images else None)
                    if s.titles else None),
    }
    if caption:
        cap = [int(pairs.target_row[i]) for i in idx if KIND_NAMES[pairs.kind[i]] == "title_image"]
        if cap:
            inputs["caption"] = ([data.title[r] for r in cap], _photos(data, cap))
    offsets = {"text": 0, "image": len(s.texts), "product": len(s.texts) + s.n_images}

    def index(slots: list[tuple[str, int]]) -> torch.Tensor:
        return torch.tensor([offsets[m] + j for m, j in slots], dtype=torch.long)

    t_rows = pairs.target_row[idx]
    return Batch(
        inputs=inputs,
        query_index=index(q_slots),
        target_index=index(t_slots),
        hard_index=index(h_slots),
        target_ids=torch.from_numpy(data.item_id[t_rows].astype(np.int64)),
        target_spu=torch.from_numpy(data.spu_id[t_rows].astype(np.int64)),
        hard_ids=torch.from_numpy(data.item_id[hr].astype(np.int64)),
        hard_spu=torch.from_numpy(data.spu_id[hr].astype(np.int64)),
        merge_rows=torch.tensor([KINDS[KIND_NAMES[pairs.kind[i]]][0] in TEXT_QUERIES for i in idx],
                                dtype=torch.bool),
        product_targets=torch.tensor([KINDS[KIND_NAMES[pairs.kind[i]]][1] == "product"
                                      for i in idx], dtype=torch.bool),
    )


def flat_outputs(out: dict[str, torch.Tensor], dim: int) -> torch.Tensor:
    parts = [out[k] for k in ("text", "image", "product") if k in out]
    return torch.cat(parts) if parts else torch.zeros((0, dim))


@torch.no_grad()
def pair_similarity(encoder: MoonEncoder, data: WorldData, pairs: PairSet, seed: int,
                    batch_size: int = 256) -> np.ndarray:
    """[P] cosine of each pair's query and target under ``encoder`` (no gradient)."""
    encoder.eval()
    g = torch.Generator().manual_seed(seed)
    sims = np.zeros(len(pairs), np.float32)
    for start in range(0, len(pairs), batch_size):
        idx = np.arange(start, min(start + batch_size, len(pairs)))
        b = assemble(data, pairs, idx, g)
        e = flat_outputs(encoder(b.inputs), encoder.embed_dim)
        sims[idx] = (e[b.query_index] * e[b.target_index]).sum(-1).cpu().numpy()
    return sims


# -- checkpoints -------------------------------------------------------------------------


def _save_state(out: Path, encoder: MoonEncoder, trainer: dict[str, Any]) -> None:
    """Write out/state atomically: a crash leaves the old state, the new one, or (between
    the two renames) the old one as out/state.old, which ``_find_state`` reads."""
    with runtime.atomic_dir(out / "state") as tmp:
        encoder.save_pretrained(tmp / "encoder")
        trainer["model_version"] = encoder.model_version
        torch.save(trainer, tmp / "trainer.pt")


def _load_trainer_state(path: Path) -> dict[str, Any]:
    """The trainer state saved by ``_save_state``: tensors, plain values and numeric numpy
    arrays (the pairs, mined neighbours), loaded with ``weights_only=True`` (no code runs
    from the file; only numpy's array reconstruction is allowed besides torch's types)."""
    from numpy._core.multiarray import _reconstruct

    allowed: list[Any] = [_reconstruct, np.ndarray, np.dtype]
    allowed += [type(np.dtype(t)) for t in ("bool", "int8", "int16", "int32", "int64", "uint8",
                                            "float16", "float32", "float64")]
    with torch.serialization.safe_globals(allowed):
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def _finished(out: Path, stage: str, config: TrainConfig) -> dict[str, Any] | None:
    """The summary of a finished identical run in ``out``, or None."""
    path = out / "summary.json"
    if not (path.exists() and (out / "encoder").exists()):
        return None
    summary: dict[str, Any] = json.loads(path.read_text())
    want = _result_keys(config.model_dump(mode="json"))
    got = _result_keys(summary.get("config") or {})
    return summary if summary.get("stage") == stage and got == want else None


# what changes the speed of a run, not its result
_SPEED_KEYS = frozenset({"threads", "cache_frozen_image", "cache_frozen_text"})


def _result_keys(dump: dict[str, Any]) -> dict[str, Any]:
    """A config dump without the keys that change only the speed (at any depth)."""
    return {k: _result_keys(v) if isinstance(v, dict) else v
            for k, v in dump.items() if k not in _SPEED_KEYS}


def _find_state(out: Path) -> Path | None:
    for d in (out / "state", out / "state.old"):
        if (d / "trainer.pt").exists() and (d / "encoder").exists():
            return d
    return None


# -- the stage ---------------------------------------------------------------------------


def catalog_texts(data: WorldData) -> list[str]:
    """What the tokenizer is trained on: warm items' titles and attributes, training
    behaviours' query texts."""
    warm = np.flatnonzero(data.warm_item_mask)
    texts = [data.title[i] for i in warm] + [data.attributes[i] for i in warm if data.attributes[i]]
    texts += [t for t, us in zip(data.beh_text, data.beh_us.tolist(), strict=True)
              if t and us < data.train_end_us]
    return texts


def build_untrained_encoder(
    world: str | Path | WorldData, config: TrainConfig, out: str | Path, *, seed: int | None = None
) -> Path:
    """Save an untrained encoder of ``config.encoder`` to ``out`` (atomically) and return
    ``out``: its tokenizer trained on ``catalog_texts`` (train-period text only, as every
    trained encoder's), its weights from ``torch.manual_seed(seed)`` (default: the config's
    seed). The baseline of the studies and the encoder of plumbing tests."""
    import shutil

    data = world if isinstance(world, WorldData) else load_world(world)
    tok = make_tokenizer(config.encoder, catalog_texts(data))
    torch.manual_seed(config.seed if seed is None else seed)
    encoder = build_encoder(config.encoder, tok)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    encoder.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return out


def stage_pairs(data: WorldData, sc: StageConfig, encoder: MoonEncoder, seed: int) -> PairSet:
    """The stage's pairs after its data processing (stage 2: purchases, short-text drop,
    hardest-pair dedup under ``encoder`` = the previous model, category resampling)."""
    pairs = build_pairs(data, sc.mix, actions=set(sc.actions) if sc.actions else None,
                        items_bought_only=sc.items_bought_only,
                        co_engaged_window=sc.co_engaged_window)
    if sc.min_query_tokens:
        pairs = drop_short_texts(data, pairs, sc.min_query_tokens)
    if sc.dedup_hardest and len(pairs):
        pairs = dedup_hardest(pairs, pair_similarity(encoder, data, pairs, seed), sc.dedup_hardest)
    if sc.resample_categories and len(pairs):
        pairs = resample_categories(data, pairs, sc.resample_categories,
                                    np.random.default_rng([seed, 17]))
    if len(pairs) == 0:
        hint = (f" (a text-only world: only {', '.join(TEXT_ONLY_KINDS)} make pairs)"
                if data.text_only else "")
        raise ValueError(f"no training pairs for mix {sc.mix} in {data.root}{hint}")
    return pairs


def _loss_kwargs(sc: StageConfig, log_scale: torch.Tensor | None = None) -> dict[str, Any]:
    if sc.loss == "circle":
        return {"margin": sc.circle_margin, "gamma": sc.circle_gamma}
    if log_scale is not None:  # learned tau = exp(-log_scale), kept in [0.01, 1]
        return {"temperature": torch.exp(-log_scale.clamp(0.0, math.log(100.0)))}
    return {"temperature": sc.temperature}


def tower_param_groups(encoder: MoonEncoder, sc: StageConfig, stage: str = "stage"
                       ) -> list[dict[str, Any]]:
    """Freeze what the stage freezes (``text_tower_lr`` / ``image_tower_lr`` 0, the first
    ``frozen_image_blocks`` of the image trunk, ``freeze`` patterns) and split the trainable
    parameters into AdamW groups: the fresh parts at ``lr``, then a pretrained text side and
    a pretrained image side at their own rates (groups left out when empty).

    Raises:
        ValueError: a ``freeze`` pattern matching no parameter, or more frozen blocks than
            the trunk has (naming the key).
    """
    import fnmatch

    text = {id(p) for p in encoder.pretrained_text_parameters()}
    image = {id(p) for p in encoder.pretrained_image_parameters()}
    frozen: set[int] = set()
    if sc.text_tower_lr == 0.0:
        frozen |= text
    if sc.image_tower_lr == 0.0:
        frozen |= image
    if sc.frozen_image_blocks:
        blocks = encoder.image_blocks()
        if sc.frozen_image_blocks > len(blocks):
            raise ValueError(f"{stage}.frozen_image_blocks {sc.frozen_image_blocks}: the image "
                             f"trunk has {len(blocks)} stages")
        frozen |= {id(p) for b in blocks[: sc.frozen_image_blocks] for p in b.parameters()}
    named = list(encoder.named_parameters())
    for pattern in sc.freeze:
        hit = {id(p) for n, p in named if fnmatch.fnmatchcase(n, pattern)}
        if not hit:
            raise ValueError(f"{stage}.freeze: {pattern!r} matches no parameter")
        frozen |= hit
    for _, p in named:
        if id(p) in frozen:
            p.requires_grad_(False)
    params = [p for _, p in named if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": [p for p in params
                                                if id(p) not in text and id(p) not in image]}]
    for ids, lr in ((text, sc.text_tower_lr), (image, sc.image_tower_lr)):
        part = [p for p in params if id(p) in ids]
        if part:  # a pretrained side, at its own (usually much lower) rate
            groups.append({"params": part, "lr": sc.lr if lr is None else lr})
    return groups


def train_stage(
    world: str | Path | WorldData,
    stage: str,
    config: TrainConfig,
    out: str | Path,
    *,
    init: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    on_step: Callable[[int, MoonEncoder], None] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Train one stage and write the run directory ``out`` (see module docstring).

    Args:
        world: a world directory (or one already loaded).
        stage: ``pretrain``, ``stage1`` or ``stage2``.
        config: the recipe (its ``stage`` block and, without ``init``, its ``encoder``).
        out: the run directory.
        init: the previous stage's checkpoint (run dir or encoder dir); None builds a
            fresh encoder and trains its tokenizer on the catalog.
        resume: continue from ``out/state`` when it exists.
        on_step: called on rank 0 after every optimiser step with (steps done, encoder),
            e.g. to keep snapshots along training (the studies do).
        device: where to train (``cpu``, ``cuda``: under torchrun each rank's LOCAL_RANK
            GPU); the process group's backend follows it (gloo, nccl).

    Returns:
        the summary (also written to out/summary.json by rank 0).
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r} ({', '.join(STAGES)})")
    sc = config.stage(stage)
    env = runtime.join_process_group(device, single_process=False)
    rank, world_size, dev = env.rank, env.world_size, env.device
    runtime.set_threads(config.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = _finished(out, stage, config) if resume else None
    if done is not None:  # the same stage with the same recipe already finished here
        return done
    data = world if isinstance(world, WorldData) else load_world(world)
    t0 = time.time()

    state_dir = _find_state(out) if resume else None
    trainer_state: dict[str, Any] | None = None
    if state_dir is not None:
        encoder = MoonEncoder.from_pretrained(state_dir / "encoder")
        trainer_state = _load_trainer_state(state_dir / "trainer.pt")
        pairs = PairSet(**{k: np.asarray(v) for k, v in trainer_state["pairs"].items()})
    else:
        if init is not None:
            encoder = MoonEncoder.from_pretrained(resolve_checkpoint(init))
        else:
            tok = make_tokenizer(config.encoder, catalog_texts(data))
            encoder = build_encoder(config.encoder, tok)
        pairs = stage_pairs(data, sc, encoder.to(dev), config.seed)
    init_version = encoder.model_version
    encoder.to(dev)
    encoder.train()
    dims = encoder.dims
    weights = sc.matryoshka_weights or [1.0] * len(dims)
    if len(weights) != len(dims):
        raise ValueError(f"matryoshka_weights has {len(weights)} entries for dims {dims}")

    param_groups = tower_param_groups(encoder, sc, stage)
    encoder.train()  # again: a text tower the stage froze runs in eval mode (MoonEncoder.train)
    params = [p for g in param_groups for p in g["params"]]
    views = (ViewBank(sc.augment_views, config.seed)
             if sc.augment_views and data.images is not None else None)
    tower = encoder.image_tower_module()
    cache: FrozenTrunkCache | None = None
    if sc.cache_frozen_image and tower is not None and tower.cacheable():
        cache = tower.feature_cache = FrozenTrunkCache.shared(tower)
    text_tower = encoder.text_tower_module()
    text_cache: FrozenTrunkCache | None = None
    if sc.cache_frozen_text and text_tower is not None and is_frozen(text_tower):
        text_cache = encoder.text_feature_cache = FrozenTrunkCache.shared_text(text_tower)
    log_scale: torch.nn.Parameter | None = None
    if sc.learn_temperature and sc.loss == "infonce":
        log_scale = torch.nn.Parameter(torch.tensor(math.log(1.0 / sc.temperature), device=dev))
        param_groups.append({"params": [log_scale], "weight_decay": 0.0})
    opt = torch.optim.AdamW(param_groups, lr=sc.lr, weight_decay=sc.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, min(sc.warmup_steps, sc.steps), max(sc.steps, 1))
    queue = TemporalNegativeQueue(encoder.embed_dim, sc.queue_size)
    start = 0
    if trainer_state is not None:
        opt.load_state_dict(trainer_state["optimizer"])
        sched.load_state_dict(trainer_state["scheduler"])
        queue.load_state_dict(trainer_state["queue"])
        if log_scale is not None and trainer_state.get("log_scale") is not None:
            with torch.no_grad():
                log_scale.copy_(torch.as_tensor(trainer_state["log_scale"]))
        start = int(trainer_state["step"])
        init_version = trainer_state.get("init_version", init_version)
    model: torch.nn.Module = encoder
    if world_size > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            encoder, device_ids=[dev] if dev.type == "cuda" else None,
            find_unused_parameters=True)
    pair_groups = data.category_id[pairs.target_row] if sc.batch_categories > 0 else None
    hard: CategoryHardNegatives | MinedHardNegatives | None = None
    mined: np.ndarray | None = None
    if sc.hard_negatives > 0:
        warm = np.flatnonzero(data.warm_item_mask)
        if sc.hard_negative_source == "mined":
            if trainer_state is not None and trainer_state.get("mined") is not None:
                mined = np.asarray(trainer_state["mined"])  # resume: the same neighbours
            else:

                # training-time mining in fp32, whatever the hardware's batch precision
                warm_emb = embed_products(
                    encoder, [data.product_titles[r] for r in warm],
                    None if data.images is None else data.images[warm], precision="fp32")
                mined = MinedHardNegatives.mine(data.item_id[warm], torch.from_numpy(warm_emb),
                                                sc.hard_negative_pool)
                encoder.train()
            hard = MinedHardNegatives(data.item_id[warm], mined)
        elif sc.hard_negative_source == "attribute":  # same category and attribute value
            hard = CategoryHardNegatives.sharing(
                data.item_id[warm], data.category_id[warm], data.spu_id[warm],
                attribute_values(data.attributes, sc.hard_negative_attribute)[warm])
        else:
            hard = CategoryHardNegatives(data.item_id[warm], data.category_id[warm],
                                         data.spu_id[warm])
    loss_fn = LOSSES[sc.loss]
    pair_tau: np.ndarray | None = None
    if sc.kind_temperature:
        if sc.loss != "infonce" or log_scale is not None:
            raise ValueError(f"{stage}.kind_temperature needs loss infonce without "
                             "learn_temperature")
        pair_tau = np.array([sc.kind_temperature.get(k, sc.temperature) for k in KIND_NAMES],
                            np.float32)
    caption = sc.caption_weight > 0 and config.encoder.backbone == "mllm"
    stage_idx = STAGES.index(stage)
    log_path = out / "train_log.jsonl"
    bar = tqdm(total=sc.steps, initial=start, desc=f"{stage}", unit="step",
               disable=(rank != 0) or not progress, dynamic_ncols=True, mininterval=1.0)
    last: dict[str, Any] = {}
    ema_loss: float | None = None
    for step in range(start, sc.steps):
        t_step = time.time()
        rng = np.random.default_rng([config.seed, stage_idx, step, rank])
        g = torch.Generator().manual_seed(int(rng.integers(2**62)))
        idx = sample_batch(pairs, sc.mix, sc.batch_size, rng, groups=pair_groups,
                           n_groups=sc.batch_categories)
        hard_rows: np.ndarray | None = None
        if hard is not None:
            hard_ids = hard.sample(data.item_id[pairs.target_row[idx]], sc.hard_negatives, rng)
            # -1: no negative found; look up real ids only (a world need not have an item 0)
            hard_rows = np.full(hard_ids.shape, -1, np.int64)
            found = hard_ids >= 0
            hard_rows[found] = data.rows_of(hard_ids[found])
            hard_rows = hard_rows.reshape(-1)
        batch = assemble(data, pairs, idx, g, hard_rows=hard_rows, caption=caption,
                         views=views).to(dev)
        outs = model(batch.inputs)
        emb = flat_outputs(outs, encoder.embed_dim)
        q, t, h = emb[batch.query_index], emb[batch.target_index], emb[batch.hard_index]
        b = q.shape[0]
        # spatial negatives: the other ranks' targets (all-gather, local grad only)
        extra_parts, cand_ids, cand_spu = [], [batch.target_ids], [batch.target_spu]
        if sc.all_gather and world_size > 1:
            t_all = gather_with_local_grad(t)
            ids_all, spu_all = gather_ids(batch.target_ids), gather_ids(batch.target_spu)
            others = torch.ones(t_all.shape[0], dtype=torch.bool, device=dev)
            others[rank * b:(rank + 1) * b] = False
            extra_parts.append(t_all[others])
            cand_ids.append(ids_all[others])
            cand_spu.append(spu_all[others])
        n_spatial = sum(p.shape[0] for p in extra_parts)
        if h.shape[0]:
            extra_parts.append(h)
            cand_ids.append(batch.hard_ids)
            cand_spu.append(batch.hard_spu)
        n_queue = len(queue)
        if n_queue:
            extra_parts.append(queue.embeddings().to(dev))  # the queue lives on the CPU
            cand_ids.append(queue.item_ids().to(dev))
            cand_spu.append(queue.spu_ids().to(dev))
        extra = torch.cat(extra_parts) if extra_parts else None
        all_ids, all_spu = torch.cat(cand_ids), torch.cat(cand_spu)
        same = batch.target_ids[:, None] == all_ids[None, :]
        same |= (batch.target_spu[:, None] == all_spu[None, :]) & (
            batch.merge_rows[:, None] if sc.merge_spu == "text"
            else torch.full((b, 1), sc.merge_spu == "all", device=dev))
        kw = _loss_kwargs(sc, log_scale)
        if pair_tau is not None:  # per-kind tau: one per query row (both directions)
            kw["temperature"] = torch.from_numpy(pair_tau[pairs.kind[idx]]).to(dev)[:, None]
        loss = matryoshka_loss(q, t, dims, loss_fn, weights=weights, extra=extra, same=same, **kw)
        if sc.symmetric:
            loss = loss + matryoshka_loss(t, q, dims, loss_fn, weights=weights,
                                          same=same[:, :b], **kw)
        if "aux_loss" in outs:
            loss = loss + sc.caption_weight * outs["aux_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if log_scale is not None and world_size > 1 and log_scale.grad is not None:
            dist.all_reduce(log_scale.grad)  # outside DDP's module: average by hand
            log_scale.grad /= world_size
        if sc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, sc.grad_clip)
        opt.step()
        sched.step()
        # temporal negatives: remember this step's product targets (all ranks')
        if sc.queue_size > 0:
            push_emb, push_ids, push_spu = t.detach(), batch.target_ids, batch.target_spu
            push_mask = batch.product_targets
            if sc.all_gather and world_size > 1:
                push_emb, push_ids, push_spu = t_all.detach(), ids_all, spu_all
                push_mask = gather_ids(push_mask.to(torch.uint8)).bool()
            queue.push(push_emb[push_mask], push_ids[push_mask], push_spu[push_mask])
        lv = float(loss.detach())
        ema_loss = lv if ema_loss is None else 0.9 * ema_loss + 0.1 * lv
        dt = time.time() - t_step
        last = {
            "step": step + 1, "loss": round(lv, 5), "lr": sched.get_last_lr()[0],
            "pairs_per_s": round(b * world_size / max(dt, 1e-9), 1),
            "negatives_per_query": int(b - 1 + (extra.shape[0] if extra is not None else 0)),
            "spatial_negatives": int(n_spatial), "hard_negatives": int(h.shape[0]),
            "queue_negatives": n_queue, "world_size": world_size,
        }
        if log_scale is not None:
            last["temperature"] = round(float(kw["temperature"].detach()), 5)
        bar.update(1)
        bar.set_postfix(loss=f"{ema_loss:.3f}", pairs_s=f"{last['pairs_per_s']:.0f}")
        if rank == 0 and ((step + 1) % sc.log_every == 0 or step + 1 == sc.steps or step == start):
            with log_path.open("a") as f:
                f.write(json.dumps({"stage": stage, **last}) + "\n")
        if on_step is not None and rank == 0:
            on_step(step + 1, encoder)
        if (step + 1) % sc.checkpoint_every == 0 and step + 1 < sc.steps:
            if rank == 0:
                _save_state(out, encoder, {
                    "step": step + 1, "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "queue": queue.state_dict(),
                    "pairs": {"kind": pairs.kind, "query_ref": pairs.query_ref,
                              "target_row": pairs.target_row},
                    "stage": stage, "config": config.model_dump(mode="json"),
                    "init_version": init_version,
                    "log_scale": None if log_scale is None else float(log_scale.detach()),
                    "mined": mined,
                })
            runtime.barrier()
    bar.close()
    encoder.eval()
    seconds = time.time() - t0
    summary = {
        "stage": stage, "model_version": encoder.model_version, "init_version": init_version,
        "steps": sc.steps, "resumed_from_step": start, "seconds": round(seconds, 2),
        "world_size": world_size, "pairs": pairs.counts(), "n_pairs": len(pairs),
        "final": last, "config": config.model_dump(mode="json"),
    }
    if cache is not None and tower is not None:
        tower.feature_cache = None
        summary["frozen_image_cache"] = cache.stats("photos")
    if text_cache is not None:
        encoder.text_feature_cache = None
        summary["frozen_text_cache"] = text_cache.stats("texts")
    if rank == 0:
        encoder.save_pretrained(out / "encoder")
        runtime.atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if world_size > 1:  # every rank's final weights, to check that DDP kept them in sync
        (out / f"rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "model_version": summary["model_version"]}))
    runtime.barrier()
    return summary


def train_all(
    world: str | Path, config: TrainConfig, out: str | Path,
    stages: Sequence[str] = STAGES, *, progress: bool = True, device: str = "cpu",
    on_step: Callable[[str, int, MoonEncoder], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the stages in order, each initialised from the previous one: out/<stage>/.
    ``on_step``: ``train_stage``'s hook, called with the stage name first."""
    data = load_world(world)
    out = Path(out)
    prev: Path | None = None
    result = {}
    for s in stages:
        hook = None if on_step is None else functools.partial(on_step, s)
        result[s] = train_stage(data, s, config, out / s, init=prev, progress=progress,
                                device=device, on_step=hook)
        prev = out / s
    return result
