"""Plan the preparation of one claim (pure): limits, container edits, CDI spec.

Input: the claim's allocation results of this driver (already matched to discovered
cards), its merged `VGpuConfig` and the capacity mode. Output: a `ClaimPlan` that the
kubelet plugin carries out (files) and records (checkpoint). The legacy device plugin
calls `container_edits` for the same env and mounts (DESIGN §6).

Limits (DESIGN §4, HAMi-core's contract in `core.hook_abi`):

- cards are exposed in physical order (card index = PCI bus order) with
  `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so limit index i is CUDA ordinal i;
- memory: `consumedCapacity.memory` (consumable mode), else `VGpuConfig.memory`
  (replicas mode), else an even split of the card over its slots (replicas) or the
  whole card (an allocation without consumed capacity is exclusive);
- compute: `consumedCapacity.cores`, else `VGpuConfig.cores`; capped at 100; no
  value means no SM variables at all (never an invented default); 0 means no limit;
- several shares of one card in one claim add up (the container sees one card).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from vgpu_dra.api.quantity import NotWholeError, QuantityError, parse_whole
from vgpu_dra.api.vgpu_config import VGpuConfig
from vgpu_dra.core import cdi
from vgpu_dra.core.allocation import (
    SHARED_CACHE_FILE,
    AllocatedShare,
    ClaimPaths,
    device_name,
    even_split,
)
from vgpu_dra.core.claims import ClaimRef, PreparedDevice
from vgpu_dra.core.hook_abi import (
    ENV_MEMORY_LIMIT,
    ENV_SM_LIMIT,
    LEDGER_FILE_DEFAULT,
    LIMITS_FILE_DEFAULT,
    CorePolicy,
    HookAbiError,
    HookLimits,
    render_limits_file,
    to_env,
)
from vgpu_dra.core.model import MIB, Card
from vgpu_dra.core.slices import DRIVER_NAME, CapacityMode, usable_memory
from vgpu_dra.core.vendor_env import (
    GENERIC_CORE_LIMIT,
    GENERIC_MEMORY_LIMIT,
    VisibleCard,
    env_profile,
    exposure_env,
)

CONTAINER_PRELOAD: Final = "/etc/ld.so.preload"
# The indexed variables (`<name>_<i>`) that belong to one card, per kind of vendor.
HOOK_LIMITS: Final = (ENV_MEMORY_LIMIT, ENV_SM_LIMIT)
GENERIC_LIMITS: Final = (GENERIC_MEMORY_LIMIT, GENERIC_CORE_LIMIT)
CONTAINER_VGPULOCK: Final = "/tmp/vgpulock"  # noqa: S108 (HAMi-core's lock dir)
CONTAINER_CACHE_DIR: Final = "/var/lib/vgpu/cache"
# The region as the container sees it: one bind-mounted FILE (the node agent creates
# it at prepare), so a tenant cannot unlink it or rename another file over it (EBUSY
# on a mount point) and every process of the claim shares the agent's file.
CONTAINER_REGION: Final = f"{CONTAINER_CACHE_DIR}/{SHARED_CACHE_FILE}"
# Containers run as arbitrary UIDs and create HAMi-core's lock files; sticky like /tmp.
SHARED_DIR_MODE: Final = 0o1777
CLAIM_DIR_MODE: Final = 0o755
# What libvgpu.so charges a process for its first context on a device, until the node
# agent measures the claim's footprint (vgpu_hook.h part 4, `context_charge`): the
# context, CUDA library workspaces and driver-internal memory a process holds beyond
# its allocations. Measured on an H200 with PyTorch: under a 4096 MiB limit the
# process held 4.84 GB on the card, 4.84e9 - 4096 MiB = 545 MB = 520 MiB more than it
# allocated.
DEFAULT_CONTEXT_CHARGE: Final = 520 * MIB


class PlanError(ValueError):
    """The claim cannot be prepared as allocated; the message says why and what to do."""


@dataclass(frozen=True)
class PrepareSettings:
    """Node-level settings of the prepare path (paths are host paths)."""

    driver_name: str = DRIVER_NAME
    cdi_vendor: str = "vgpu.hami.io"
    cdi_class: str = "gpu"
    lib_path: str = "/usr/local/vgpu/libvgpu.so"  # mounted at the same path
    preload_path: str = "/usr/local/vgpu/ld.so.preload"  # mounted as /etc/ld.so.preload
    claims_dir: str = "/var/lib/vgpu-dra/claims"
    vgpulock_dir: str = "/tmp/vgpulock"  # noqa: S108
    # "nvidia.com/gpu" when an NVIDIA CDI spec exists on the host: cards are then
    # exposed by NVIDIA's CDI device IDs instead of NVIDIA_VISIBLE_DEVICES.
    nvidia_cdi_kind: str | None = None
    log_level: int | None = None
    default_slots: int = 10  # cards without their own slot count (replicas default memory)
    context_charge: int = DEFAULT_CONTEXT_CHARGE  # bytes per context, stamped in the ledger

    @property
    def cdi_kind(self) -> str:
        return f"{self.cdi_vendor}/{self.cdi_class}"


@dataclass(frozen=True)
class CardShare:
    """What one container may use of one physical card."""

    card: Card
    memory_bytes: int
    cores: int | None  # percent; None = not configured


@dataclass(frozen=True)
class ContainerEdits:
    """Env and mounts for containers using the shares, plus the host side.

    `env` is complete (what a container sees); `card_env[uuid]` is the part that
    belongs to one card (its indexed limits), so CDI can attach it to that card's
    device. `limits_file` is the text of the read-only limits file (None for vendors
    whose limits libvgpu.so does not enforce). `host_dirs` are (path, mode) to create
    before a container starts; `cards` is the exposure order.
    """

    env: Mapping[str, str]
    mounts: tuple[cdi.Mount, ...]
    limits_file: str | None
    host_dirs: tuple[tuple[str, int], ...]
    cards: tuple[CardShare, ...]
    card_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    enforced: bool = True
    hook_limits: HookLimits | None = None
    """What the region is stamped with when the node agent creates it (None: the
    vendor's limits are not enforced by libvgpu.so, no region and no ledger)."""
    context_charge: int = 0
    """Bytes per context stamped into the ledger the node agent creates."""


@dataclass(frozen=True)
class ClaimPlan:
    uid: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...]
    cdi_spec: dict[str, Any]
    cdi_file_name: str
    paths: ClaimPaths  # host paths; the claim dir is removed on unprepare
    limits_file: str | None
    host_dirs: tuple[tuple[str, int], ...]
    memory_by_card: Mapping[str, int]  # card uuid -> bytes (replicas overcommit check)
    card_uuids: tuple[str, ...] = ()  # exposure order: limit index i is card_uuids[i]
    hook_limits: HookLimits | None = None  # stamped into the region the agent creates
    context_charge: int = 0  # stamped into the ledger the agent creates

    @property
    def claim_dir(self) -> str:
        return self.paths.dir


def _whole(value: Any, what: str, kind: str) -> int:
    """A non-negative whole quantity (bytes, percent). Raises PlanError naming `what`."""
    try:
        return parse_whole(value)
    except NotWholeError:
        raise PlanError(f"{what}: {value!r} is not a whole {kind}") from None
    except QuantityError as e:
        raise PlanError(f"{what}: {e}") from None


def _bytes(value: Any, what: str) -> int:
    return _whole(value, what, "number of bytes")


def _percent(value: Any, what: str) -> int:
    return min(_whole(value, what, "percentage"), 100)


def _share_limits(
    share: AllocatedShare, config: VGpuConfig, mode: CapacityMode, settings: PrepareSettings
) -> CardShare:
    card = share.card
    where = f"device {share.pool}/{share.device}"
    if mode is CapacityMode.REPLICAS:
        if config.memory is not None:
            memory = _bytes(config.memory, "VGpuConfig.memory")
            if memory < MIB:
                raise PlanError(f"VGpuConfig.memory {config.memory} is below 1Mi")
            if memory > usable_memory(card):
                raise PlanError(
                    f"VGpuConfig.memory {config.memory} is more than card {card.uuid} "
                    f"({card.product_name}) has: {usable_memory(card) // MIB} MiB"
                )
        else:
            memory = even_split(usable_memory(card), card.slots or settings.default_slots)
        cores = config.cores
    else:
        if config.memory is not None:
            raise PlanError(
                "VGpuConfig.memory applies in replicas mode only; in consumable mode "
                "request memory with spec.devices.requests[].exactly.capacity.requests.memory"
            )
        mem = share.consumed.get("memory")
        memory = (
            _bytes(mem, f"{where} consumedCapacity.memory")
            if mem is not None
            else usable_memory(card)
        )
        raw_cores = share.consumed.get("cores")
        cores = (
            _percent(raw_cores, f"{where} consumedCapacity.cores")
            if raw_cores is not None
            else config.cores
        )
    return CardShare(card=card, memory_bytes=memory, cores=cores)


def merge_by_card(shares: Sequence[CardShare]) -> tuple[CardShare, ...]:
    """One entry per physical card, in physical (index) order; shares of the same
    card add up (cores capped at 100; None only when every share has None)."""
    by_uuid: dict[str, CardShare] = {}
    for s in shares:
        prev = by_uuid.get(s.card.uuid)
        if prev is None:
            by_uuid[s.card.uuid] = s
            continue
        cores = (
            None
            if prev.cores is None and s.cores is None
            else min((prev.cores or 0) + (s.cores or 0), 100)
        )
        by_uuid[s.card.uuid] = CardShare(s.card, prev.memory_bytes + s.memory_bytes, cores)
    return tuple(sorted(by_uuid.values(), key=lambda s: s.card.index))


def container_edits(
    shares: Sequence[CardShare],
    config: VGpuConfig,
    settings: PrepareSettings,
    paths: ClaimPaths,
) -> ContainerEdits:
    """Env, mounts and host dirs for containers that use `shares` (any order; merged
    per card and exposed in physical order). `paths` are the per-claim (or, for the
    device plugin, per-container) host paths of the limits file and the shared
    accounting region (created by the host side with `hook_limits` stamped, mounted as
    one file). Raises PlanError for an empty list, mixed vendors or limits the hook
    cannot express."""
    cards = merge_by_card(shares)
    if not cards:
        raise PlanError("no device to prepare")
    vendors = {c.card.vendor.lower() for c in cards}
    if len(vendors) > 1:
        raise PlanError(f"a claim mixing vendors ({', '.join(sorted(vendors))}) is not supported")
    profile = env_profile(cards[0].card.vendor)
    visible = [VisibleCard(c.card.uuid, c.card.index, c.memory_bytes, c.cores) for c in cards]
    by_cdi = settings.nvidia_cdi_kind is not None
    env: dict[str, str] = dict(exposure_env(profile, visible, by_cdi=by_cdi))
    if not profile.enforced:
        return ContainerEdits(
            env=env,
            mounts=(),
            limits_file=None,
            host_dirs=(),
            cards=cards,
            card_env={c.card.uuid: _own(env, i, GENERIC_LIMITS) for i, c in enumerate(cards)},
            enforced=False,
        )
    cores = [c.cores for c in cards if c.cores is not None]
    try:
        limits = HookLimits(
            memory_limits={i: c.memory_bytes for i, c in enumerate(cards)},
            sm_limits={i: c.cores for i, c in enumerate(cards) if c.cores is not None},
            # The un-indexed SM limit only when every card has the same one: the hook
            # applies it to any device without its own value.
            sm_limit_all=cores[0] if len(cores) == len(cards) and len(set(cores)) == 1 else None,
            shared_cache=CONTAINER_REGION,
            priority=config.priority,
            core_policy=CorePolicy(config.core_limit_policy) if config.core_limit_policy else None,
            log_level=settings.log_level,
        )
    except HookAbiError as e:
        raise PlanError(f"limits cannot be expressed: {e}") from None
    hook_env = to_env(limits)
    card_env = {c.card.uuid: _own(hook_env, i, HOOK_LIMITS) for i, c in enumerate(cards)}
    env.update(hook_env)
    mounts = (
        cdi.Mount(settings.lib_path, settings.lib_path),
        cdi.Mount(settings.preload_path, CONTAINER_PRELOAD),
        cdi.Mount(paths.limits, LIMITS_FILE_DEFAULT),
        cdi.Mount(paths.ledger, LEDGER_FILE_DEFAULT),
        cdi.Mount(paths.region, CONTAINER_REGION, read_only=False),
        cdi.Mount(settings.vgpulock_dir, CONTAINER_VGPULOCK, read_only=False),
    )
    return ContainerEdits(
        env=env,
        mounts=mounts,
        limits_file=render_limits_file(limits),
        host_dirs=(
            (paths.dir, CLAIM_DIR_MODE),
            (paths.cache_dir, CLAIM_DIR_MODE),  # only the agent creates files there
            (settings.vgpulock_dir, SHARED_DIR_MODE),
        ),
        cards=cards,
        card_env=card_env,
        hook_limits=limits,
        context_charge=settings.context_charge,
    )


def _own(env: Mapping[str, str], index: int, names: Sequence[str]) -> dict[str, str]:
    """The variables of `env` that belong to the card at limit index `index`."""
    return {f"{n}_{index}": env[f"{n}_{index}"] for n in names if f"{n}_{index}" in env}


def plan_claim(
    ref: ClaimRef,
    shares: Sequence[AllocatedShare],
    config: VGpuConfig,
    mode: CapacityMode,
    settings: PrepareSettings,
) -> ClaimPlan:
    """The complete plan for one claim. Deterministic: the same inputs give the same
    plan (a repeated prepare rewrites identical files). Raises PlanError,
    InvalidNameError (a claim UID not in RFC 4122 form) or cdi.CdiError (all
    ValueErrors) with a message naming the problem."""
    if not shares:
        raise PlanError(f"the allocation has no device of driver {settings.driver_name}")
    paths = ClaimPaths.for_claim(settings.claims_dir, ref.uid)
    card_shares = [_share_limits(s, config, mode, settings) for s in shares]
    edits = container_edits(card_shares, config, settings, paths)
    kind = settings.cdi_kind
    nvidia = edits.enforced and settings.nvidia_cdi_kind is not None
    devices: list[PreparedDevice] = []
    cdi_devices: list[tuple[str, cdi.Edits]] = []
    per_card_keys = {k for e in edits.card_env.values() for k in e}
    for s in shares:
        name = cdi.device_name(ref.uid, s.device, s.share_id)
        uuid = s.card.uuid
        # Every device carries its card's own variables (a CDI device must have edits):
        # two shares of one card repeat the same KEY=VALUE, which CDI applies once.
        cdi_devices.append((name, cdi.Edits(env=dict(edits.card_env.get(uuid, {})))))
        ids = [cdi.qualified(kind, name)]
        if nvidia:
            ids.append(cdi.qualified(str(settings.nvidia_cdi_kind), uuid))
        devices.append(
            PreparedDevice(
                request_names=(s.request.split("/", 1)[0],),
                pool_name=s.pool,
                device_name=s.device,
                cdi_device_ids=tuple(ids),
                share_id=s.share_id,
            )
        )
    common_env = {k: v for k, v in edits.env.items() if k not in per_card_keys}
    spec = cdi.build_spec(kind, cdi_devices, cdi.Edits(env=common_env, mounts=edits.mounts))
    return ClaimPlan(
        uid=ref.uid,
        namespace=ref.namespace,
        name=ref.name,
        devices=tuple(devices),
        cdi_spec=spec,
        cdi_file_name=cdi.transient_spec_name(kind, ref.uid),
        paths=paths,
        limits_file=edits.limits_file,
        host_dirs=edits.host_dirs,
        memory_by_card={c.card.uuid: c.memory_bytes for c in edits.cards},
        card_uuids=tuple(c.card.uuid for c in edits.cards),
        hook_limits=edits.hook_limits,
        context_charge=edits.context_charge,
    )


def check_replicas_capacity(
    card: Card, ref: ClaimRef, new_bytes: int, prepared: Mapping[ClaimRef, int]
) -> str | None:
    """In replicas mode the scheduler cannot bound memory: refuse a claim whose limit
    would push the card's prepared limits above its memory. Returns the refusal
    message (naming the card and every claim involved), or None when it fits."""
    capacity = usable_memory(card)
    used = sum(prepared.values())
    if used + new_bytes <= capacity:
        return None
    others = ", ".join(f"{r} ({b // MIB} MiB)" for r, b in sorted(prepared.items(), key=str))
    return (
        f"card {device_name(card.index)} ({card.uuid}, {card.product_name}) "
        f"has {capacity // MIB} MiB; "
        f"claim {ref} asks for {new_bytes // MIB} MiB on top of {used // MIB} MiB already "
        f"prepared for {others or 'no other claim'}: refusing to overcommit the card's memory "
        "(set VGpuConfig.memory lower, or use fewer replicas per card)"
    )
