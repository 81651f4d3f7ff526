"""Building the Accelerator so that CPU, DDP and DeepSpeed launches do what they say (docs/distributed.md).

Facts measured with accelerate 1.15 / deepspeed 0.19.8 on CPU:
- with several CPU processes only ``Accelerator(cpu=True)`` (or ACCELERATE_USE_CPU=1) gives a real
  DDP wrap; a plain ``Accelerator()`` under ``--multi_gpu`` reports world 1 and the ranks diverge;
- ``accelerate launch --cpu --num_processes 2`` (or a MULTI_CPU config) starts ONE process (it
  needs mpirun for more);
- DeepSpeed on CPU needs the gloo process group (else accelerate thinks world == 1 and DeepSpeed's
  batch-size check fails), ``Accelerator(cpu=True)`` silently drops DeepSpeed, and
  DeepSpeedPlugin.select() wants transformers' metadata.
``build_accelerator`` encodes all of that, and ``check_launch`` turns the silent failures we can
see from inside a process into errors. The rest are ZeRO-3 helpers: gathering full weights and
making modules that return non-tensor outputs safe.
"""
from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

LAUNCH_HINT = ("launch N CPU processes with `accelerate launch --config_file configs/accelerate/cpu_ddp.yaml ...` "
               "or `accelerate launch --multi_gpu --num_processes N ...` (docs/distributed.md)")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes")


def _using_deepspeed() -> bool:
    return _env_true("ACCELERATE_USE_DEEPSPEED")


def _patch_deepspeed_without_transformers() -> None:
    """accelerate 1.15 calls compare_versions('transformers', ...) unconditionally for DeepSpeed."""
    import accelerate.utils.dataclasses as dc
    from accelerate.utils.imports import is_transformers_available

    if getattr(dc.DeepSpeedPlugin, "_adpm_patched", False):
        return
    original = dc.DeepSpeedPlugin.set_deepspeed_weakref
    dc.DeepSpeedPlugin.set_deepspeed_weakref = lambda self: original(self) if is_transformers_available() else None
    dc.DeepSpeedPlugin._adpm_patched = True


def build_accelerator(mixed_precision: str = "no", find_unused_parameters: bool = False,
                      log_with: list[str] | None = None, project_dir: str | None = None):
    """An Accelerator that is right on CPU (gloo) and on CUDA (nccl), for DDP or DeepSpeed launches.

    DDP or DeepSpeed comes from the launcher (``ACCELERATE_USE_DEEPSPEED``, set by ``--use_deepspeed``
    or a DEEPSPEED config file); CPU or GPU from the machine (ACCELERATE_USE_CPU=1 forces CPU), so a
    CPU config file needs no extra environment variable. ``engine.train`` then fills in accumulation,
    clipping and micro-batch from the training config (``configure_for``). ``log_with``: Accelerate's
    trackers (train.log_with; runtime/tracking.RunLog starts them), ``project_dir`` where they write.
    """
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, DistributedDataParallelKwargs, InitProcessGroupKwargs

    on_cpu = not torch.cuda.is_available() or _env_true("ACCELERATE_USE_CPU")
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=find_unused_parameters)]
    if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1:  # a single process must not ask for a group
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    if _using_deepspeed():
        from ..extras import require

        require("deepspeed", "a DeepSpeed launch (--use_deepspeed or a DEEPSPEED config)")
        _patch_deepspeed_without_transformers()
        # torch 2.14 deprecates collectives DeepSpeed calls on every step: one warning per step otherwise.
        warnings.filterwarnings("ignore", message=r".*torch\.distributed\.(all_gather_into_tensor|reduce_scatter_tensor)",
                                category=FutureWarning)
        plugin = DeepSpeedPlugin(zero3_save_16bit_model=True)  # everything else from the launcher's environment
        acc = Accelerator(mixed_precision=mixed_precision, kwargs_handlers=handlers, deepspeed_plugin=plugin,
                          log_with=log_with or None, project_dir=project_dir)
    else:
        acc = Accelerator(cpu=on_cpu, mixed_precision=mixed_precision, kwargs_handlers=handlers,
                          log_with=log_with or None, project_dir=project_dir)
    check_launch(acc)
    return acc


def launcher_precision_conflict(train, environ=os.environ) -> str | None:
    """The launcher's ``--mixed_precision`` (ACCELERATE_MIXED_PRECISION) against train.mixed_precision.

    The training config decides the precision (it is part of the run's record); an Accelerator built
    with an explicit ``mixed_precision`` ignores the launcher's. So a launcher asking for another
    precision than the config is a mistake that would otherwise train silently in the wrong one.
    Returns the one-line message, or None when they agree (or the launcher said nothing / "no").
    """
    theirs = environ.get("ACCELERATE_MIXED_PRECISION", "no").lower()
    if theirs in ("", "no") or theirs == train.mixed_precision:
        return None
    return (f"train.mixed_precision: the launcher asked for --mixed_precision {theirs} but the training config "
            f"says {train.mixed_precision!r}; the config decides: add train.mixed_precision={theirs} "
            "(or launch with --mixed_precision no)")


def has_idle_parameters(train) -> bool:
    """Whether some parameters get no gradient in some steps (DDP must then look for unused ones):
    the denoiser during the prior warm-up, the prior after it with train.freeze_prior."""
    return train.prior_warmup_epochs > 0 or train.freeze_prior


def accelerator_for(cfg):
    """``build_accelerator`` + ``configure_for``, everything taken from a Config."""
    acc = build_accelerator(cfg.train.mixed_precision, find_unused_parameters=has_idle_parameters(cfg.train),
                            log_with=cfg.train.log_with, project_dir=cfg.run.output_dir)
    configure_for(acc, cfg.train)
    return acc


def configure_for(acc, train) -> None:
    """Give the Accelerator OUR accumulation, clipping and micro-batch (``train`` is a TrainConfig).

    Without DeepSpeed only the accumulation count lives in the Accelerator. With DeepSpeed all three
    live in its config, where the launcher leaves them "auto" (we never prepare() a dataloader, so
    accelerate could not infer the micro-batch, and it would fill clipping with 1.0). A DeepSpeed
    JSON that pins a different value is an error, never a silent override. Call before ``prepare``.
    """
    acc.gradient_accumulation_steps = train.grad_accum
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    ours = {"gradient_accumulation_steps": (train.grad_accum, "train.grad_accum"),
            "train_micro_batch_size_per_gpu": (train.batch_size, "train.batch_size"),
            "gradient_clipping": (float(train.grad_clip), "train.grad_clip")}
    for key, (value, our_key) in ours.items():
        theirs = ds.get(key, "auto")
        if theirs == "auto":
            ds[key] = value
        elif float(theirs) != float(value):
            where = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "the DeepSpeed config")
            raise ValueError(f"{where}: {key}={theirs} but {our_key}={value}; set it to \"auto\" there "
                             "(the training config decides)")
    plugin.gradient_accumulation_steps = train.grad_accum


def check_launch(acc) -> None:
    """Raise on the launch mistakes that otherwise train silently on the wrong number of processes."""
    from accelerate.utils import DistributedType

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != acc.num_processes:
        raise RuntimeError(
            f"the launcher started {world} processes (WORLD_SIZE={world}) but the Accelerator sees "
            f"{acc.num_processes} ({acc.distributed_type}): the ranks would train independently and diverge. "
            "On CPU the Accelerator must be built with cpu=True (adpm_dist.runtime.distributed.build_accelerator does "
            f"that) or ACCELERATE_USE_CPU=1 must be set; {LAUNCH_HINT}")
    mpi = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))
    if ("WORLD_SIZE" not in os.environ and _env_true("ACCELERATE_USE_CPU") and "MASTER_PORT" in os.environ
            and not mpi):  # accelerate's simple launcher sets MASTER_PORT only when asked for > 1 process
        raise RuntimeError(
            "accelerate was asked for several CPU processes with --cpu (or a MULTI_CPU config) and started "
            f"only this one: it spawns extra CPU processes only through mpirun; {LAUNCH_HINT}")
    if _using_deepspeed() and acc.distributed_type != DistributedType.DEEPSPEED:
        raise RuntimeError(f"launched with DeepSpeed but the Accelerator runs {acc.distributed_type}: do not pass "
                           "cpu=True with DeepSpeed (it silently falls back to DDP); use build_accelerator")


def zero_stage(acc) -> int | None:
    """The DeepSpeed ZeRO stage in use, or None without DeepSpeed."""
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    return None if plugin is None else int(plugin.zero_stage)


def world_info(acc) -> str:
    """One line saying what actually runs, for the log."""
    stage = zero_stage(acc)
    mode = f"DeepSpeed ZeRO-{stage}" if stage is not None else str(acc.distributed_type).split(".")[-1]
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    return (f"{mode} | {acc.num_processes} process(es), backend {backend}, device {acc.device}, "
            f"{torch.get_num_threads()} thread(s) each | mixed precision {acc.mixed_precision} | "
            f"gradient accumulation {acc.gradient_accumulation_steps}")


@contextlib.contextmanager
def gathered_params(acc, module: nn.Module) -> Iterator[None]:
    """Full parameters on every rank inside the block (ZeRO-3 partitions them; a no-op otherwise).

    Every rank must enter: under ZeRO-3 this is a collective (read-only: changes are not kept).
    """
    if zero_stage(acc) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def _broadcast_from_rank0(tensors: list[torch.Tensor]) -> None:
    """In-place broadcast of CPU or device tensors, one collective per dtype."""
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    by_dtype: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault((t.dtype, t.device), []).append(t)
    for group in by_dtype.values():
        flat = _flatten_dense_tensors(group)
        torch.distributed.broadcast(flat, src=0)
        for t, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(synced)


def full_state_dict(acc, module: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the whole state on every rank, identical everywhere. Every rank must call it.

    Parameters are the same on every rank (gathered under ZeRO-3); buffers (BatchNorm statistics)
    are not, since each rank updates them on its own batches, so they are taken from rank 0, which
    is what DDP itself does before every forward.
    """
    with gathered_params(acc, module):
        state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}
    if acc.num_processes > 1:
        buffers = {name for name, _ in module.named_buffers()}
        _broadcast_from_rank0([v for k, v in state.items() if k in buffers])
    return state


def sync_buffers(acc, module: nn.Module) -> None:
    """Copy rank 0's buffers to every rank before a forward, as DDP does and DeepSpeed does not.

    Without it, under DeepSpeed, each rank's eval-mode prior (docs/algorithm.md, "Training loop") would use the
    BatchNorm statistics of its own data shard, and ranks would diffuse toward different means.
    """
    if acc.num_processes > 1 and zero_stage(acc) is not None:
        with torch.no_grad():
            _broadcast_from_rank0(list(module.buffers()))


def _hookable(output) -> bool:
    """Does DeepSpeed find a tensor in this module output (it looks through tuples, lists and dicts only)?"""
    if isinstance(output, torch.Tensor):
        return True
    if isinstance(output, (tuple, list)):
        return any(_hookable(o) for o in output)
    if isinstance(output, dict):
        return any(_hookable(o) for o in output.values())
    return False


def make_zero3_safe(acc, model: nn.Module, example: Callable[[], object]) -> list[str]:
    """Under ZeRO-3, keep gathered the parameters DeepSpeed would otherwise release too early.

    ZeRO-3 re-gathers a module's own parameters for backward through hooks on the tensors its forward
    returns. A module that owns parameters directly and returns something else (a dataclass such as
    ImageFeatures) never gets that hook, so backward meets an empty parameter ("size of tensor a (0)
    must match"). One probe forward (``example``, eval mode, no grad) finds such modules; their direct
    parameters are registered as external parameters of the root module, i.e. gathered for its whole
    forward and backward. Call before ``prepare``. Returns the names of the parameters concerned.
    """
    if zero_stage(acc) != 3:
        return []
    import deepspeed

    unsafe: dict[int, nn.Module] = {}

    def check(module, args, output):
        if next(module.parameters(recurse=False), None) is not None and not _hookable(output):
            unsafe[id(module)] = module

    handles = [m.register_forward_hook(check) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            example()
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    names = {id(p): n for n, p in model.named_parameters()}
    found = []
    for module in unsafe.values():
        for p in module.parameters(recurse=False):
            deepspeed.zero.register_external_parameter(model, p)
            found.append(names[id(p)])
    return found


def mean_over_ranks(acc, values: dict[str, float]) -> dict[str, float]:
    """Per-rank averages -> the same all-rank average on every rank (rows must agree across ranks)."""
    if acc.num_processes == 1 or not values:
        return values
    keys = sorted(values)
    mean = acc.reduce(torch.tensor([values[k] for k in keys], dtype=torch.float64, device=acc.device), "mean")
    return dict(zip(keys, mean.tolist()))


def ranks_agree(acc, module: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """sha256 of the parameters in ``state`` (from ``full_state_dict``); raises if any rank's differs.

    Under DDP and ZeRO the ranks hold bitwise identical parameters after every step; a difference
    means they trained independently (a launch that silently ran without a process group).
    """
    import hashlib

    from accelerate.utils import gather_object

    digest = hashlib.sha256()
    for name, _ in sorted(module.named_parameters()):
        digest.update(state[name].detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    mine = digest.hexdigest()[:16]
    every = gather_object([mine]) if acc.num_processes > 1 else [mine]
    if len(set(every)) > 1:
        raise RuntimeError(f"parameters differ across ranks (sha256 per rank: {every}): the ranks are not "
                           f"training together; {LAUNCH_HINT}")
    return mine


def main_rank_verdict(acc, verdict: str | None) -> str | None:
    """Rank 0's verdict (None: fine; else the refusal) on every rank: a check only rank 0 can make (a lock,
    a re-read of the shards) is then raised on every rank, and none is left waiting in a collective."""
    if acc.num_processes <= 1:
        return verdict
    from accelerate.utils import broadcast_object_list

    shared = [verdict]
    broadcast_object_list(shared, from_process=0)
    return shared[0]
