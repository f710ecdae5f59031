"""Kubernetes object-name rules we check before using a name (pure).

A node name is a DNS subdomain (RFC 1123, as the API server's
`IsDNS1123Subdomain`): at most 253 characters of lowercase letters, digits, '-'
and '.', where every dot-separated part starts and ends with a letter or digit.
The node name is also our ResourceSlice pool name, so an invalid one would only
surface later as a rejected slice; checking it up front names the culprit.
A DNS label (`IsDNS1123Label`: namespaces, a pod's claim names, the requests of a
claim) is a DNS subdomain of one part, at most 63 characters.
"""

from __future__ import annotations

import re

DNS_SUBDOMAIN_MAX_LENGTH = 253
DNS_LABEL_MAX_LENGTH = 63

_ALLOWED = re.compile(r"[a-z0-9.-]")
_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(rf"{_LABEL.pattern}(?:\.{_LABEL.pattern})*")


class InvalidNameError(ValueError):
    """A name breaks a naming rule; the message quotes the name and the rule broken."""


def validate_node_name(name: str) -> None:
    """Check that `name` is a valid Node name (a DNS subdomain).

    Returns None when valid. Raises InvalidNameError naming the first rule broken
    (empty, too long, a character outside [a-z0-9.-], or a dot-separated part that
    is empty or does not start and end with an alphanumeric character).
    """
    _validate_dns_subdomain(name, what="node name")


def _validate_dns_subdomain(name: str, *, what: str) -> None:
    if not isinstance(name, str):
        raise InvalidNameError(f"{what} must be a string, got {type(name).__name__}")
    if len(name) <= DNS_SUBDOMAIN_MAX_LENGTH and _SUBDOMAIN.fullmatch(name):
        return  # the common case, in one match; the rest names the rule broken
    if not name:
        raise InvalidNameError(f"{what} must not be empty")
    if len(name) > DNS_SUBDOMAIN_MAX_LENGTH:
        raise InvalidNameError(
            f"{what} {name[:40]!r}... is {len(name)} characters long; a DNS subdomain "
            f"has at most {DNS_SUBDOMAIN_MAX_LENGTH}"
        )
    bad = sorted({c for c in name if not _ALLOWED.fullmatch(c)})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise InvalidNameError(
            f"{what} {name!r} contains {shown}; a DNS subdomain (RFC 1123) consists of "
            "lowercase letters, digits, '-' and '.'"
        )
    for part in name.split("."):
        if not _LABEL.fullmatch(part):
            detail = "an empty part" if not part else f"the part {part!r}"
            raise InvalidNameError(
                f"{what} {name!r} has {detail}; every dot-separated part of a DNS "
                "subdomain (RFC 1123) must start and end with a lowercase letter or digit"
            )


def validate_object_name(name: str, what: str = "object name") -> None:
    """Check a namespaced object's name (a DNS subdomain), e.g. a claim's.
    Raises InvalidNameError naming the rule broken."""
    _validate_dns_subdomain(name, what=what)


def validate_dns_label(name: str, what: str) -> None:
    """Check a DNS label (a DNS subdomain of one part, at most 63 characters), e.g. a
    namespace or a pod's claim name. Raises InvalidNameError naming the rule broken."""
    _validate_dns_subdomain(name, what=what)
    if "." in name or len(name) > DNS_LABEL_MAX_LENGTH:
        raise InvalidNameError(
            f"{what} {name!r} is not a DNS label (at most {DNS_LABEL_MAX_LENGTH} characters, "
            "no dots)"
        )


def validate_namespace(name: str) -> None:
    """A namespace is a DNS label. Raises InvalidNameError naming the rule broken."""
    validate_dns_label(name, "namespace")


_UID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_uid(uid: str, what: str = "claim UID") -> None:
    """Kubernetes UIDs are lowercase RFC 4122 strings; anything else (a path
    separator, '..', a NUL) is refused before it reaches a file name. `what` names
    the UID in the message."""
    if not isinstance(uid, str) or not _UID.fullmatch(uid):
        raise InvalidNameError(f"{what} {uid!r} is not a Kubernetes UID (RFC 4122 form)")
