"""Whether the NVIDIA container toolkit exposes this host's GPUs through CDI."""

from __future__ import annotations

from pathlib import Path

NVIDIA_CDI_KIND = "nvidia.com/gpu"
# Where the toolkit writes its CDI specs: the static dir first, then the runtime one.
DEFAULT_CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))


def detect_nvidia_cdi_kind(dirs: tuple[Path, ...]) -> str | None:
    """`nvidia.com/gpu` when the NVIDIA container toolkit has written a CDI spec for
    the GPUs on this host (then devices are exposed by CDI id), else None. Our own
    specs (`vgpu.hami.io*`) and unreadable files are ignored."""
    for d in dirs:
        for f in sorted(d.glob("*.json")) + sorted(d.glob("*.yaml")):
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            if NVIDIA_CDI_KIND in text and not f.name.startswith("vgpu.hami.io"):
                return NVIDIA_CDI_KIND
    return None
