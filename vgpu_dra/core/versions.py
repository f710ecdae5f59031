"""Version strings as the DRA `version` attribute type wants them (pure).

A DRA device attribute of type `version` must be a strict semantic version 2.0.0
("550.54.15", "12.4.0"). Drivers report looser forms: NVIDIA driver versions with
two parts ("535.104") or zero-padded parts ("470.57.02"), CUDA versions as an
integer (12040), compute capability as a (major, minor) pair. These helpers coerce
those forms and return None for anything that is not recognisably a version, so
the caller can omit the attribute and report it rather than publish garbage.
"""

from __future__ import annotations

import re

_LOOSE = re.compile(
    r"^v?(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:\.(?P<patch>\d+))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?\Z",
    re.ASCII,
)
_NUMERIC = re.compile(r"^\d+\Z", re.ASCII)
_MAX_COMPONENT_DIGITS = 18


def to_semver(text: str) -> str | None:
    """Coerce a loose version string to strict semver 2.0.0, or None.

    Accepts an optional leading 'v', one to three dot-separated numbers (missing
    minor/patch become 0, leading zeros are dropped: "470.57.02" -> "470.57.2"),
    then an optional "-prerelease" and "+build" as semver spells them (numeric
    prerelease identifiers lose leading zeros too). Surrounding whitespace is
    ignored. Anything else ("", "abc", "1.2.3.4", "r550") gives None. Never raises;
    idempotent: to_semver(to_semver(x)) == to_semver(x) whenever the inner is not None.
    """
    m = _LOOSE.match(text.strip())
    if m is None:
        return None
    parts = [m.group("major"), m.group("minor") or "0", m.group("patch") or "0"]
    if any(len(p.lstrip("0")) > _MAX_COMPONENT_DIGITS for p in parts):
        return None
    out = ".".join(str(int(p)) for p in parts)
    if m.group("pre"):
        out += "-" + ".".join(
            str(int(i)) if _NUMERIC.match(i) else i for i in m.group("pre").split(".")
        )
    if m.group("build"):
        out += "+" + m.group("build")
    return out


def cuda_version_from_int(value: int) -> str | None:
    """NVML's CUDA driver version integer (1000*major + 10*minor) -> "12.4.0".

    Returns None for values that cannot be a CUDA version (<= 0). Never raises.
    """
    if isinstance(value, bool) or value <= 0:
        return None
    return f"{value // 1000}.{(value % 1000) // 10}.0"


def compute_capability(major: int, minor: int) -> str | None:
    """(8, 0) -> "8.0", the form NVIDIA documents; None for negative parts."""
    if major < 0 or minor < 0:
        return None
    return f"{major}.{minor}"
