"""vgpu_dra.core.names: node names are DNS subdomains, namespaces and claim names DNS
labels (RFC 1123)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vgpu_dra.core.names import (
    DNS_LABEL_MAX_LENGTH,
    DNS_SUBDOMAIN_MAX_LENGTH,
    InvalidNameError,
    validate_dns_label,
    validate_namespace,
    validate_node_name,
)

# Independent oracle: the API server's IsDNS1123Subdomain.
ORACLE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


@pytest.mark.parametrize(
    "name",
    ["a", "0", "gpu-node-1", "node.example.com", "a-b.c-d", "1-2-3", "x" * 253,
     "ip-10-0-0-1.ec2.internal", "a" * 63 + "." + "b" * 63],
    ids=lambda n: n[:30],
)
def test_valid(name: str) -> None:
    validate_node_name(name)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "must not be empty"),
        ("x" * 254, "at most 253"),
        ("Gpu-Node", "'G', 'N'"),
        ("gpu_node", "'_'"),
        ("gpu node", "' '"),
        ("gpü", "'ü'"),
        ("-node", "start and end"),
        ("node-", "start and end"),
        (".node", "an empty part"),
        ("node.", "an empty part"),
        ("a..b", "an empty part"),
        ("a.-b", "the part '-b'"),
    ],
    ids=["empty", "too-long", "uppercase", "underscore", "space", "non-ascii", "leading-dash",
         "trailing-dash", "leading-dot", "trailing-dot", "double-dot", "part-leading-dash"],
)
def test_invalid_names_the_rule(name: str, fragment: str) -> None:
    with pytest.raises(InvalidNameError) as err:
        validate_node_name(name)
    assert fragment in str(err.value)
    assert "node name" in str(err.value)


def test_not_a_string() -> None:
    with pytest.raises(InvalidNameError, match="must be a string"):
        validate_node_name(42)  # type: ignore[arg-type]


_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")


@given(st.lists(_LABEL, min_size=1, max_size=5).map(".".join))
def test_generated_subdomains_are_valid(name: str) -> None:
    validate_node_name(name)


@given(st.text(max_size=300))
def test_agrees_with_the_api_server_rule(name: str) -> None:
    expected = len(name) <= DNS_SUBDOMAIN_MAX_LENGTH and ORACLE.match(name) is not None
    try:
        validate_node_name(name)
        ok = True
    except InvalidNameError:
        ok = False
    assert ok == expected


# Independent oracle: the API server's IsDNS1123Label.
LABEL_ORACLE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("a", None),
        ("vgpu-c0-nvidia", None),
        ("x" * 63, None),
        ("x" * 64, "not a DNS label (at most 63 characters, no dots)"),
        ("a.b", "not a DNS label (at most 63 characters, no dots)"),
        ("", "must not be empty"),
        ("A", "'A'"),
        ("-a", "start and end"),
    ],
    ids=["one-char", "claim-name", "63", "64", "dot", "empty", "uppercase", "leading-dash"],
)
def test_dns_label(name: str, fragment: str | None) -> None:
    if fragment is None:
        validate_dns_label(name, "pod claim name")
        return
    with pytest.raises(InvalidNameError) as err:
        validate_dns_label(name, "pod claim name")
    assert fragment in str(err.value)
    assert str(err.value).startswith("pod claim name ")


def test_a_namespace_is_a_dns_label() -> None:
    with pytest.raises(InvalidNameError, match=r"^namespace 'a\.b' is not a DNS label"):
        validate_namespace("a.b")


@given(st.text(alphabet="ab-.Z", max_size=70) | st.text(max_size=70))
def test_dns_label_agrees_with_the_api_server_rule(name: str) -> None:
    expected = len(name) <= DNS_LABEL_MAX_LENGTH and LABEL_ORACLE.match(name) is not None
    try:
        validate_dns_label(name, "label")
        ok = True
    except InvalidNameError:
        ok = False
    assert ok == expected
