"""Fuzz target: the HAMi annotation codec (`vgpu_dra/core/hami/annotations.py`).

Property, for any value (the input as text, every decoder tried on it):

- each decoder (node register in both formats, pod devices, pair scores, node lock,
  device cordon) returns or raises `AnnotationError`, never another exception: an
  annotation anyone can write must not break a relist (docs/security.md "One bad
  object never affects another");
- what decodes encodes back to the same value: a node register re-encoded by the
  device plugin (`encode_node_devices`) and a pod's devices re-encoded by the
  extender (`encode_pod_devices`) decode to what was read;
- a decoded lock names a time with a timezone (the extender compares it with now).

The input is UTF-8 text; invalid bytes become lone surrogates (`surrogateescape`),
which a JSON escape can produce too.
"""

from __future__ import annotations

import contextlib
from typing import Final

from tests.fuzz.mutators import Mutator, json_mutator
from vgpu_dra.core.hami import annotations as ann

MAX_LEN: Final = 8192
TOKENS: Final = (
    "id", "index", "count", "devmem", "devcore", "type", "numa", "mode", "health", "uuid",
    "score", "hami-core", "mig", "NVIDIA", "NVIDIA-NVIDIA A100-SXM4-80GB", "GPU-0", "true",
    "false", ",", ":", ";", "Z", "T", "+00:00", "2024-01-02T03:04:05Z",
)  # fmt: skip


def check(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")
    try:
        devices = ann.decode_node_devices(text)
    except ann.AnnotationError:
        pass
    else:
        assert ann.decode_node_devices(ann.encode_node_devices(devices)) == devices
    try:
        pod = ann.decode_pod_devices(text)
    except ann.AnnotationError:
        pass
    else:
        assert ann.decode_pod_devices(ann.encode_pod_devices(pod)) == pod
    with contextlib.suppress(ann.AnnotationError):
        ann.decode_pair_scores(text)
    try:
        lock = ann.decode_lock(text)
    except ann.AnnotationError:
        pass
    else:
        assert lock.time.tzinfo is not None
        assert lock.holder
    ann.parse_cordon(text)


MUTATOR: Final[Mutator | None] = json_mutator(TOKENS)
