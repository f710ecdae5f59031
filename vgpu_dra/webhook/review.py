"""AdmissionReview v1 on the wire (pure): parse a request, build a response.

A body that is not an AdmissionReview at all is a `ReviewError` (the server answers
HTTP 400); everything about the pod itself is decided by `translate` and answered
with HTTP 200 and `allowed: false` plus a message, which the API server shows the
user as "admission webhook ... denied the request: <message>".
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

from vgpu_dra.api import jsonwire
from vgpu_dra.webhook.translate import Allowed, Decision

JSON = dict[str, Any]
API_VERSION = "admission.k8s.io/v1"
CLAIM_KIND = ("resource.k8s.io", "v1", "ResourceClaim")
_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError", 503: "ServiceUnavailable"}
MAX_SHAPE_BYTES = 64 * 1024
"""Reviews larger than this get no `shape` (their answers are not cached)."""
_PLAIN_UID = re.compile(rb"[A-Za-z0-9._-]{1,128}")


class ReviewError(ValueError):
    """The body is not an AdmissionReview v1 request."""


@dataclass(frozen=True)
class Review:
    uid: str
    operation: str
    kind: tuple[str, str, str]  # group, version, kind
    namespace: str
    dry_run: bool
    obj: Any
    old_obj: Any = None
    """UPDATE: the object before the change."""
    user: str = ""
    """`userInfo.username` of whoever made the request ("" when absent)."""
    shape: bytes | None = field(default=None, repr=False, compare=False)
    """The review without its uid (`review_shape`): reviews of one shape differ in
    nothing but their uid, so they get the same decision. None: not computed."""

    @property
    def is_pod_create(self) -> bool:
        return self.operation == "CREATE" and self.kind == ("", "v1", "Pod")

    @property
    def is_pod_update(self) -> bool:
        return self.operation == "UPDATE" and self.kind == ("", "v1", "Pod")

    @property
    def is_claim_create(self) -> bool:
        return self.operation == "CREATE" and self.kind == CLAIM_KIND


def parse_review(body: bytes | bytearray) -> Review:
    try:
        doc = jsonwire.loads(body)  # json.loads, faster
    except (ValueError, UnicodeDecodeError) as e:
        raise ReviewError(f"body is not JSON: {e}") from None
    except RecursionError:
        raise ReviewError("body is nested too deeply") from None
    if not isinstance(doc, dict):  # decoded JSON objects are dicts
        raise ReviewError("body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind AdmissionReview, got "
            f"{doc.get('apiVersion')!r} {doc.get('kind')!r} (set admissionReviewVersions: [v1])"
        )
    req = doc.get("request")
    if not isinstance(req, dict) or not isinstance(req.get("uid"), str) or not req["uid"]:
        raise ReviewError("AdmissionReview has no request.uid")
    kind = req.get("kind")
    if not isinstance(kind, dict):
        kind = {}
    return Review(
        uid=req["uid"],
        operation=str(req.get("operation", "")),
        kind=(str(kind.get("group", "")), str(kind.get("version", "")), str(kind.get("kind", ""))),
        namespace=str(req.get("namespace") or ""),
        dry_run=req.get("dryRun") is True,
        obj=req.get("object"),
        old_obj=req.get("oldObject"),
        user=_username(req.get("userInfo")),
        shape=review_shape(body, req["uid"]),
    )


def _username(info: object) -> str:
    name = info.get("username") if isinstance(info, Mapping) else None
    return name if isinstance(name, str) else ""


def review_shape(body: bytes | bytearray, uid: str) -> bytes | None:
    """The exact bytes of a review that `json.loads` parsed, less its request uid:
    the position of the first `"<uid>"` string literal, then the body without it.
    Two bodies of one shape hold the same JSON but for `request.uid`.

    Why: a uid of plain characters (`[A-Za-z0-9._-]`, as Kubernetes' UUIDs) is
    written as is, so the literal is found byte for byte in a UTF-8 body. Where two
    valid bodies are equal but for that span, the span is a whole string token in
    both (a bare word cannot follow a string) or the tail of one in both, and the
    documents differ only there. If it were not `request.uid`'s own token, that
    token would be equal in both bodies, so both uids, and so both spans, would be
    equal: the bodies would be identical. None when no key is cheap and exact: a
    body over MAX_SHAPE_BYTES, not UTF-8 (json also reads UTF-16 and UTF-32), or a
    uid that JSON could write otherwise."""
    if len(body) > MAX_SHAPE_BYTES:
        return None
    raw = uid.encode("ascii", "replace")
    if not _PLAIN_UID.fullmatch(raw) or json.detect_encoding(body) != "utf-8":
        return None
    literal = b'"' + raw + b'"'
    at = body.find(literal)
    if at < 0:
        return None
    view = memoryview(body)
    return b"".join((b"%d:" % at, view[:at], view[at + len(literal) :]))


def response(uid: str, decision: Decision) -> JSON:
    resp: JSON = {"uid": uid}
    if isinstance(decision, Allowed):
        resp["allowed"] = True
        if decision.patch:
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(
                json.dumps(decision.patch, separators=(",", ":")).encode()
            ).decode()
    else:
        resp["allowed"] = False
        resp["status"] = {
            "code": decision.code,
            "reason": _REASONS.get(decision.code, "BadRequest"),
            "message": decision.message,
        }
    if isinstance(decision, Allowed) and decision.warnings:
        resp["warnings"] = decision.warnings
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": resp}


_HEAD = b'{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":'


@dataclass(frozen=True)
class EncodedResponse:
    """`response(uid, decision)` as compact JSON, encoded once for any uid."""

    tail: bytes
    """What follows the uid."""

    def with_uid(self, uid: str) -> bytes:
        return b"".join((_HEAD, encode_basestring_ascii(uid).encode(), self.tail))

    @property
    def size(self) -> int:
        return len(_HEAD) + len(self.tail)


def encode_response(decision: Decision) -> EncodedResponse:
    full = json.dumps(response("", decision), separators=(",", ":")).encode()
    if not full.startswith(_HEAD + b'""'):  # the field order of `response`
        raise AssertionError(f"unexpected AdmissionReview encoding: {full[:100]!r}")
    return EncodedResponse(full[len(_HEAD) + 2 :])
