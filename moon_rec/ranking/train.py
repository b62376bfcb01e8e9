"""Training the ranker: DistributedModelParallel, fused sparse optimizers, checkpoints.

One process or ``torchrun --nproc_per_node N``: gloo on CPU, nccl on GPU (chosen from the
device). ID and semantic-ID tables are sharded table-wise by TorchRec's planner and use fused
kernels with EXACT_ROWWISE_ADAGRAD (``RowWiseAdagrad`` applied in backward); the dense part
is data-parallel with Adam. The MOON content table (``FrozenContentTable``) is its own
EmbeddingCollection, sharded row-wise, initialised from the embedding snapshot and
frozen: it is given no optimizer in backward, it is kept out of Adam, its weight has
``requires_grad`` False, and its lookup runs under ``no_grad`` so its kernel never runs a
backward (a fused table with lr 0 would still compute gradients and run an optimizer).
TorchRec's advice for freezing is a separate collection with the dense kernel and no
optimizer, but TorchRec 1.8 allows the dense kernel only for data-parallel (replicated)
tables, which is what the content table must not be. The global batch is split evenly over ranks, so one rank and
two ranks see the same examples per step.

Model directory (``--out``): ``moon_rec.ranking.model_dir.RankerDir`` owns its layout
(meta.json, model.pt without copies of the snapshot's vectors, checkpoint.pt).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.distributed.embedding import EmbeddingCollectionSharder
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.model_parallel import (
    DataParallelWrapper,
    DistributedModelParallel,
)
from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
from torchrec.distributed.planner.storage_reservations import FixedPercentageStorageReservation
from torchrec.distributed.types import ModuleSharder, ShardingType
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.optim.rowwise_adagrad import RowWiseAdagrad
from tqdm import tqdm

from moon_rec import runtime
from moon_rec.data.embeddings import MoonEmbeddings, load_moon_embeddings
from moon_rec.data.errors import DataError
from moon_rec.data.feature_spec import ITEM_KEY, ITEM_TABLE
from moon_rec.ranking.config import RankerConfig
from moon_rec.ranking.data import TrainingSet, load_training_set
from moon_rec.ranking.item_tables import CONTENT_TABLE, FrozenContentTable, SemanticIdTable
from moon_rec.ranking.look_head import behaviour_pairs, pretrain_look_head
from moon_rec.ranking.model import MoonRanker
from moon_rec.ranking.model_dir import RankerDir, save
from moon_rec.ranking.sparse import (
    POSITION_TABLE,
    QUERY_TABLE,
    USER_TABLE,
    RankerTables,
    remap_ids,
)

log = logging.getLogger(__name__)



def table_sizes(data: TrainingSet, config: RankerConfig) -> RankerTables:
    """The ranker's tables for ``data`` (its features encoded): rows of the user table and
    of each behaviour sequence's table (``item``, and e.g. ``category``, shared with the
    sequence's target) are ``config.id_table_rows`` or, when 0, the largest id of the train
    split (targets and behaviours) + 2, so the last (OOV) row is never a real id; a table an
    entry declares ``rows`` for has those. Test-only ids (cold items) therefore share the
    OOV row. The spec's pooled tables are sized by its fitted features."""
    if data.features is None:
        raise ValueError("table_sizes: encode the training set's features first")
    train = ~data.is_test
    spec = data.features.spec

    def rows(*arrays: np.ndarray) -> int:
        if config.id_table_rows > 0:
            return config.id_table_rows
        top = max((int(a.max()) if a.size else 0) for a in arrays)
        return max(top, 0) + 2

    hist_mask = data.item_sequence[train] >= 0
    sizes = {USER_TABLE: rows(data.user_id[train])}
    tables = RankerTables({}, data.features)
    for table, feats in tables.sequence_tables().items():
        values = []
        for f in feats:  # targets [N], sequences [N, L] (their real values)
            if f == ITEM_KEY:
                values.append(data.item_id[train])
            elif f in data.sequences:
                values.append(data.sequences[f][train][hist_mask])
            else:
                values.append(data.raw[f][train])
        declared = max((e.rows for e in spec.features if e.column in feats), default=0)
        sizes[table] = declared or rows(*values)
    sizes |= {QUERY_TABLE: config.query_token_buckets + 1, POSITION_TABLE: config.max_position}
    return RankerTables(sizes, data.features)


def content_arch(
    embeddings: MoonEmbeddings | None, config: RankerConfig
) -> FrozenContentTable | None:
    """The frozen content table of ``embeddings`` (None for the ``ids`` feature set)."""
    if not config.uses_moon:
        return None
    if embeddings is None:
        raise DataError(f"feature_set {config.feature_set!r} reads MOON vectors: it needs "
                        "--embeddings")
    return FrozenContentTable(
        torch.from_numpy(embeddings.item_ids), torch.from_numpy(embeddings.item_vectors)
    )


def semantic_id_table(
    embeddings: MoonEmbeddings | None, config: RankerConfig
) -> SemanticIdTable | None:
    """The item -> code lookup of ``embeddings`` (None without ``config.semantic_ids``).

    Raises:
        DataError: no embeddings, embeddings without codes, or codes that do not fit the
            config (levels, codebook).
    """
    sid = config.semantic_ids
    if sid is None:
        return None
    if embeddings is None:
        raise DataError("semantic_ids features need --embeddings (with a semantic_ids column)")
    codes = embeddings.semantic_ids
    if codes is None:
        raise DataError(
            "the embeddings have no semantic-ID codes (run `moon embed` with semantic IDs on)",
            column="semantic_ids",
        )
    if codes.shape[1] != sid.levels:
        raise DataError(
            f"codes of {codes.shape[1]} levels, the config's semantic_ids.levels is "
            f"{sid.levels}",
            column="semantic_ids",
        )
    top = int(codes.max(initial=-1))
    if top >= sid.codebook:
        raise DataError(
            f"codeword {top} does not fit semantic_ids.codebook {sid.codebook}",
            column="semantic_ids",
        )
    return SemanticIdTable(torch.from_numpy(embeddings.item_ids), torch.from_numpy(codes))


def build_model(
    config: RankerConfig,
    tables: RankerTables,
    embeddings: MoonEmbeddings | None,
    seed: int,
    data: TrainingSet | None = None,
) -> MoonRanker:
    """The unsharded model with seeded initial weights (identical on every rank).

    ``tables``: the ranker's tables and the spec's fitted features (:func:`table_sizes`).
    With ``data``, the rows of the user, item and pooled id tables that never occur in its
    train split start at zero: they are never trained, and at test time (cold items) random
    initial values would only add noise."""
    torch.manual_seed(seed)
    model = MoonRanker(
        config, tables, content_arch(embeddings, config), semantic_id_table(embeddings, config),
    )
    if data is not None:
        zero_unseen_rows(model, data)
    return model


def zero_unseen_rows(model: MoonRanker, data: TrainingSet) -> None:
    """Zero the rows of the user table, the item table (targets and behaviours) and the
    spec's pooled tables of int64 ids sized from the train split (not hashed) that no
    train-split row uses."""
    train = ~data.is_test
    arch = model.sparse_arch
    seen: dict[tuple[str, str], list[np.ndarray]] = {
        ("ebc", USER_TABLE): [data.user_id[train]],
        ("ec", ITEM_TABLE): [data.item_id[train]],
    }
    for f in model.tables.sequence_tables()[ITEM_TABLE]:
        if f in data.sequences:
            hist = data.sequences[f][train]
            seen[("ec", ITEM_TABLE)].append(hist[hist >= 0])
    spec = model.features.spec
    for e in spec.pooled():
        if e.kind == "categorical" and e.dtype == "int64" and not e.hash:
            ids = data.raw[e.column][train]
            seen.setdefault(("ebc", spec.table_of(e)), []).append(ids[ids >= 0])
    policy = model.config.id_policy
    with torch.no_grad():
        for (kind, name), parts in seen.items():
            ids = np.concatenate(parts)
            if kind == "ebc":
                weight = arch.embedding_bag_collection.embedding_bags[name].weight
            else:
                weight = arch.embedding_collection.embeddings[name].weight
            n = weight.shape[0]
            rows = remap_ids(torch.from_numpy(ids), torch.full((ids.size,), n), policy)
            keep = torch.zeros(n, dtype=torch.bool)
            keep[rows] = True
            weight[~keep] = 0.0


def sharders() -> list[ModuleSharder[torch.nn.Module]]:
    """The sharders of the ranker's TorchRec modules (ID, content and code tables)."""
    return [
        EmbeddingBagCollectionSharder(),
        EmbeddingCollectionSharder(),
    ]


def _frozen_content(model: MoonRanker) -> FrozenContentTable | None:
    arch = model.content_arch
    return arch if isinstance(arch, FrozenContentTable) else None


def is_frozen_parameter(name: str) -> bool:
    """Whether the (DMP or plain) parameter ``name`` is frozen while the ranker trains: the
    content table's, or the look head's (post-trained before)."""
    dotted = f".{name}"
    return ("content_arch." in dotted and CONTENT_TABLE in name) or ".look_head." in dotted


def pretrain_head(
    model: MoonRanker, data: TrainingSet, embeddings: MoonEmbeddings, seed: int,
    progress: bool = False,
) -> dict[str, Any] | None:
    """Post-train the model's look head (if any) on ``data``'s clicked train rows
    (history -> next item, :mod:`moon_rec.ranking.look_head`); None without a head."""
    cfg = model.config.look_head
    if model.look_head is None or cfg is None:
        return None
    pairs = behaviour_pairs(embeddings, data.item_id, data.item_sequence, data.clicked,
                            ~data.is_test, cfg.history)
    # each catalog row's group for same-group negatives (the category in today's specs):
    # the target of the spec's second (target, sequence) pair, from the rows that name it
    # (targets and behaviours); none without such a pair
    category = np.full(len(embeddings.item_ids), -1, np.int64)
    layout = data.layout
    if len(layout.pairs) > 1:
        target, seq = layout.pairs[1]
        for items, cats in ((data.item_id, data.raw[target]),
                            (data.item_sequence.ravel(), data.sequences[seq].ravel())):
            rows = embeddings.item_rows(items)
            category[rows[rows >= 0]] = cats[rows >= 0]
    vectors = torch.from_numpy(np.ascontiguousarray(embeddings.item_vectors, np.float32))
    return pretrain_look_head(model.look_head, vectors, pairs, category, cfg, seed, progress)


def shard_model(
    model: MoonRanker, config: RankerConfig, env: runtime.DistributedEnv
) -> tuple[DistributedModelParallel, CombinedOptimizer]:
    """Wrap ``model`` in DMP (table-wise sharding, fused kernels, row-wise Adagrad in
    backward) and return it with the combined optimizer (fused sparse + Adam dense).

    The sharded model starts from ``model``'s own weights (DMP re-initialises shards, so
    they are copied back).
    """
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    frozen = _frozen_content(model)
    # The dense part (and small buffers: the content table's id -> row map, the semantic-ID
    # codes) goes to the device here; DMP builds the table shards on the device itself, so
    # the tables (the content table above all) are never copied there whole.
    for name, child in model.named_children():
        if name == "content_arch" and frozen is not None:
            frozen.rows.to(env.device)
        elif name not in ("sparse_arch", "semantic_id_arch"):
            child.to(env.device)
    collections: list[torch.nn.Module] = [
        model.sparse_arch.embedding_bag_collection,
        model.sparse_arch.embedding_collection,
    ]
    if model.semantic_id_arch is not None:
        collections.append(model.semantic_id_arch.embedding_collection)
    sparse_params = [p for c in collections for p in c.parameters()]
    apply_optimizer_in_backward(RowWiseAdagrad, sparse_params, {"lr": config.train.sparse_lr})
    tables = [
        *model.sparse_arch.embedding_bag_collection.embedding_bag_configs(),
        *model.sparse_arch.embedding_collection.embedding_configs(),
        *(
            model.semantic_id_arch.embedding_collection.embedding_configs()
            if model.semantic_id_arch is not None
            else []
        ),
    ]
    constraints = {
        t.name: ParameterConstraints(
            sharding_types=[ShardingType.TABLE_WISE.value], compute_kernels=["fused"]
        )
        for t in tables
    }
    if frozen is not None:
        # row-wise: a catalog's vectors spread over every rank (fused: the only kernel
        # TorchRec offers a sharded table; its lookup has no backward, see the docstring)
        constraints[CONTENT_TABLE] = ParameterConstraints(
            sharding_types=[ShardingType.ROW_WISE.value], compute_kernels=["fused"]
        )
    with _quiet_torchrec():
        planner = EmbeddingShardingPlanner(
            topology=Topology(
                world_size=env.world_size,
                local_world_size=env.world_size,
                compute_device=env.device.type,
            ),
            constraints=constraints,
            batch_size=max(1, config.train.batch_size // env.world_size),
            storage_reservation=FixedPercentageStorageReservation(percentage=0.15),
        )
    shard = sharders()
    with _quiet_torchrec():
        plan = planner.collective_plan(model, shard, dist.GroupMember.WORLD)
        dmp = DistributedModelParallel(
            module=model,
            device=env.device,
            plan=plan,
            sharders=shard,
            data_parallel_wrapper=SingleProcessWrapper() if env.world_size == 1 else None,
        )
    load_full_state(dmp.state_dict(), initial)  # the snapshot's vectors into the shards
    trainable = {}
    for name, param in in_backward_optimizer_filter(dmp.named_parameters()):
        if is_frozen_parameter(name):
            param.requires_grad_(False)  # the shards' weights are created trainable
        else:
            trainable[name] = param
    dense = KeyedOptimizerWrapper(
        # fused: one kernel over every dense tensor (CPU and CUDA), not a loop per tensor
        trainable, lambda params: torch.optim.Adam(params, lr=config.train.dense_lr, fused=True)
    )
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])


class SingleProcessWrapper(DataParallelWrapper):
    """The dense part of a one-process DMP, left unwrapped: TorchRec's default wraps it in
    DistributedDataParallel at any world size, which at world size 1 costs a gloo
    all-reduce and DDP's reducer hooks every step for nothing. (DMP strips a DDP wrapper
    from parameter and state-dict names, so checkpoints are the same either way.)"""

    def wrap(self, dmp: DistributedModelParallel, env: Any, device: torch.device) -> None:
        return None


@contextlib.contextmanager
def _quiet_torchrec() -> Iterator[None]:
    """Silence TorchRec's deprecation notices and planner chatter that users cannot act on."""
    planner_log = logging.getLogger("torchrec.distributed.planner.types")
    level = planner_log.level
    planner_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="torchrec")
            warnings.filterwarnings("ignore", message=".*ShardedTensor.*", category=FutureWarning)
            warnings.filterwarnings(
                "ignore", message=".*broadcast_buffers.*", category=FutureWarning
            )
            yield
    finally:
        planner_log.setLevel(level)


def gather_full_state(state: Any, env: runtime.DistributedEnv) -> Any:
    """A copy of a (nested) state dict with every ShardedTensor gathered to a full CPU
    tensor on rank 0 (None elsewhere). Collective: call on every rank."""
    if isinstance(state, ShardedTensor):
        full = None
        with _quiet_torchrec():
            if env.is_main:
                full = torch.empty(state.size(), dtype=state.dtype, device=env.device)
            state.gather(dst=0, out=full)
        return None if full is None else full.cpu()
    if isinstance(state, torch.Tensor):
        return state.detach().cpu().clone()
    if isinstance(state, dict):
        # Sorted: ranks may list keys in different orders, and gathers must pair up.
        return {k: gather_full_state(state[k], env) for k in sorted(state, key=str)}
    if isinstance(state, list | tuple):
        return type(state)(gather_full_state(v, env) for v in state)
    return copy.deepcopy(state)


def load_full_state(current: Any, full: Any) -> None:
    """Copy full tensors ``full`` into the (possibly sharded) tensors of ``current`` in
    place; each rank copies the slices of its own shards."""
    if isinstance(current, ShardedTensor):
        for shard in current.local_shards():
            md = shard.metadata
            idx = tuple(
                slice(o, o + s) for o, s in zip(md.shard_offsets, md.shard_sizes, strict=True)
            )
            shard.tensor.detach().copy_(full[idx])
    elif isinstance(current, torch.Tensor):
        if tuple(current.shape) != tuple(full.shape):
            raise ValueError(f"shape {tuple(full.shape)} does not fit {tuple(current.shape)}")
        current.detach().copy_(full)
    elif isinstance(current, dict):
        for key, value in current.items():
            if key not in full:
                raise KeyError(f"checkpoint has no entry {key!r}")
            load_full_state(value, full[key])


def _meta(
    config: RankerConfig,
    tables: RankerTables,
    embeddings: MoonEmbeddings | None,
    training_set: str,
    embeddings_path: str | None,
) -> dict[str, Any]:
    return {
        "config": config.to_dict(),
        "features": tables.features.to_dict(),
        "tables": dict(tables.rows),
        "model_version": embeddings.model_version if embeddings is not None else None,
        "moon_dim": config.moon_dim,
        "content_rows": int(embeddings.item_ids.shape[0]) if embeddings is not None else 0,
        "semantic_id_rows": (
            int(embeddings.item_ids.shape[0])
            if embeddings is not None and config.semantic_ids is not None
            else 0
        ),
        "embedding_bad_rows": embeddings.n_bad_rows if embeddings is not None else 0,
        "training_set": str(Path(training_set).resolve()),
        "embeddings": str(Path(embeddings_path).resolve()) if embeddings_path else None,
    }


def train_ranker(
    training_set: str | Path,
    config: RankerConfig,
    out: str | Path,
    *,
    embeddings: str | Path | None = None,
    query_embeddings: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    max_steps: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train a ranker on the train split of ``training_set`` and write it to ``out``.

    Args:
        training_set: the training-set parquet (file or directory).
        config: the experiment.
        out: the model directory (created).
        embeddings: MOON embeddings (file or directory); needed for ``ids+moon``, and
            recorded (model_version) whenever given.
        query_embeddings: query-text MOON embeddings (file or directory), optional (they
            may also sit in the ``embeddings`` directory); without them s_q is 0.
        resume: continue from ``out/checkpoint.pt`` when it exists (same config).
        progress: show a progress bar (rank 0).
        max_steps: stop after this many steps in total (a checkpoint is written), e.g. to
            test resume; None trains all epochs.
        device: force ``cpu`` or ``cuda`` (default: CUDA when available).

    Returns:
        the meta dict written to ``out/meta.json`` (rank 0), with ``steps``, ``done``,
        ``train_loss``, ``examples_per_s`` and ``train_seconds`` (wall time of this call,
        loading included).
    """
    out = Path(out)
    rdir = RankerDir(out)
    started = time.perf_counter()
    with runtime.process_group(device) as env:
        spec = config.feature_spec()
        # features fitted on the train split only, before anything trains (bad ones named
        # here)
        data = load_training_set(training_set, config.max_seq_len, config.query_token_buckets,
                                 spec, default_rows=config.id_table_rows)
        emb = None
        if embeddings is not None:
            emb = load_moon_embeddings(embeddings, config.moon_dim, queries=query_embeddings)
        elif config.uses_embeddings:
            what = f"feature_set {config.feature_set!r}" if config.uses_moon else "semantic_ids"
            raise DataError(f"{what} needs --embeddings")
        data.attach_queries(emb if config.uses_moon else None)
        q_vectors = emb.query_vectors if (emb is not None and config.uses_moon) else None
        train_rows = np.flatnonzero(~data.is_test)
        if train_rows.size < env.world_size:
            raise DataError(
                "the train split has too few rows", file=str(training_set), column="split"
            )
        tables = table_sizes(data, config)
        meta = _meta(
            config, tables, emb, str(training_set), str(embeddings) if embeddings else None,
        )
        meta["query_embeddings"] = (
            str(Path(query_embeddings).resolve()) if query_embeddings else None
        )
        meta["n_queries"] = len(emb.query_index) if emb is not None else 0
        seed = config.train.seed
        model = build_model(config, tables, emb, seed, data)
        ckpt_path = rdir.checkpoint_file
        if emb is not None and not (resume and ckpt_path.is_file()):
            # a resumed run restores the post-trained head from its checkpoint
            meta["look_head"] = pretrain_head(model, data, emb, seed, progress and env.is_main)
        dmp, optimizer = shard_model(model, config, env)

        global_batch = min(config.train.batch_size, train_rows.size)
        global_batch -= global_batch % env.world_size
        per_rank = global_batch // env.world_size
        steps_per_epoch = train_rows.size // global_batch
        total_steps = steps_per_epoch * config.train.epochs
        step = 0
        if resume and ckpt_path.is_file():
            step = _resume(ckpt_path, dmp, optimizer, meta, env)
        if env.is_main:
            rdir.write_meta({**meta, "steps": step, "total_steps": total_steps, "done": False})
        stop = total_steps if max_steps is None else min(total_steps, max_steps)
        bar = tqdm(
            total=total_steps, initial=step, disable=not (progress and env.is_main), desc="ranker"
        )
        loss_fn = torch.nn.BCEWithLogitsLoss()
        dmp.train()
        losses: list[float] = []
        t0, n_examples = time.perf_counter(), 0
        perm_epoch, perm = -1, train_rows
        while step < stop:
            epoch, k = divmod(step, steps_per_epoch)
            if epoch != perm_epoch:  # the epoch's shuffle depends on (seed, epoch) only
                perm_epoch, perm = (
                    epoch,
                    np.random.default_rng([seed, epoch]).permutation(train_rows),
                )
            start = k * global_batch + env.rank * per_rank
            rows = np.sort(perm[start : start + per_rank])
            batch = data.batch(rows, q_vectors).to(env.device)
            logits = dmp(batch)
            loss = loss_fn(logits, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            n_examples += global_batch
            losses.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            at_epoch_end = step % steps_per_epoch == 0
            every = config.train.checkpoint_every
            if step == stop or at_epoch_end or (every > 0 and step % every == 0):
                _save_checkpoint(ckpt_path, dmp, optimizer, meta, step, env)
        bar.close()
        elapsed = time.perf_counter() - t0
        done = step >= total_steps
        weights = gather_full_state(dmp.state_dict(), env)
        if env.is_main:
            if done:
                rdir.save_weights(weights)
            meta.update(
                steps=step,
                total_steps=total_steps,
                done=done,
                world_size=env.world_size,
                train_loss=float(np.mean(losses[-50:])) if losses else None,
                examples_per_s=n_examples / elapsed if elapsed > 0 and n_examples else None,
                train_seconds=round(time.perf_counter() - started, 1),
            )
            rdir.write_meta(meta)
        runtime.barrier()
        return meta


def _fused_file(path: Path, env: runtime.DistributedEnv) -> Path:
    return RankerDir(path.parent).fused_checkpoint_file(env.rank, env.world_size)


def _local_fused_state(fused: Any) -> dict[tuple[str, str], list[torch.Tensor]]:
    """This rank's fused (sparse) optimizer state: the local shards as plain tensors.

    The fused state is rank-local (a rank lists only the tables it holds), so it is saved
    per rank rather than gathered."""
    out: dict[tuple[str, str], list[torch.Tensor]] = {}
    for key, entry in fused.state_dict()["state"].items():
        for name, value in entry.items():
            if isinstance(value, ShardedTensor):
                out[(key, name)] = [s.tensor.detach().cpu().clone() for s in value.local_shards()]
            elif isinstance(value, torch.Tensor):
                out[(key, name)] = [value.detach().cpu().clone()]
    return out


def _load_local_fused_state(fused: Any, saved: dict[tuple[str, str], list[torch.Tensor]]) -> None:
    state = fused.state_dict()
    for key, entry in state["state"].items():
        for name, value in entry.items():
            tensors = (
                [s.tensor for s in value.local_shards()]
                if isinstance(value, ShardedTensor)
                else [value]
            )
            for t, src in zip(tensors, saved[(key, name)], strict=True):
                t.detach().copy_(src)
    fused.load_state_dict(state)


def _save_checkpoint(
    path: Path,
    dmp: DistributedModelParallel,
    optimizer: CombinedOptimizer,
    meta: dict[str, Any],
    step: int,
    env: runtime.DistributedEnv,
) -> None:
    fused, dense = optimizer.optimizers[0][1], optimizer.optimizers[1][1]
    path.parent.mkdir(parents=True, exist_ok=True)
    save({"step": step, "state": _local_fused_state(fused)}, _fused_file(path, env))
    state = {
        "model": gather_full_state(dmp.state_dict(), env),
        "dense_optimizer": gather_full_state(dense.state_dict(), env),
        "step": step,
        "world_size": env.world_size,
        "config": meta["config"],
        "training_set": meta["training_set"],
        "model_version": meta["model_version"],
        "features": meta["features"],
    }
    runtime.barrier()  # every rank's fused state is on disk before the main file names the step
    if env.is_main:
        save(state, path)
    runtime.barrier()


def _resume(
    path: Path,
    dmp: DistributedModelParallel,
    optimizer: CombinedOptimizer,
    meta: dict[str, Any],
    env: runtime.DistributedEnv,
) -> int:
    """Load the checkpoint at ``path``; returns its step. Weights and the dense optimizer
    load at any world size; the fused (sparse) optimizer state needs the same world size,
    else it restarts (with a warning)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("config", "training_set", "model_version", "features"):
        if state.get(key) != meta[key]:
            raise ValueError(
                f"{path}: checkpoint was made with another {key}; pass --no-resume or a new --out"
            )
    step = int(state["step"])
    load_full_state(dmp.state_dict(), state["model"])
    fused, dense = optimizer.optimizers[0][1], optimizer.optimizers[1][1]
    dense.init_state()  # Adam's state is lazy: create it so that it can be loaded into
    dense.load_state_dict(state["dense_optimizer"])
    fused_path = _fused_file(path, env)
    fused_state = (
        torch.load(fused_path, map_location="cpu", weights_only=True)
        if fused_path.is_file()
        else None
    )
    if fused_state is not None and int(fused_state["step"]) == step:
        _load_local_fused_state(fused, fused_state["state"])
    else:
        warnings.warn(
            f"{path}: no sparse optimizer state for rank {env.rank} of {env.world_size} at step "
            f"{step}; row-wise Adagrad state restarts",
            RuntimeWarning,
            stacklevel=2,
        )
    log.info("resumed from %s at step %d", path, step)
    return step
