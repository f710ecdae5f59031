"""AdmissionReview v1 on the wire (pure): parse a request, build a response.

A body that is not an AdmissionReview at all is a `ReviewError` (the server answers
HTTP 400); everything about the pod itself is decided by `translate` and answered
with HTTP 200 and `allowed: false` plus a message, which the API server shows the
user as "admission webhook ... denied the request: <message>".
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vgpu_dra.webhook.translate import Allowed, Decision

JSON = dict[str, Any]
API_VERSION = "admission.k8s.io/v1"
CLAIM_KIND = ("resource.k8s.io", "v1", "ResourceClaim")
_REASONS = {400: "BadRequest", 403: "Forbidden", 500: "InternalError", 503: "ServiceUnavailable"}


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
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ReviewError(f"body is not JSON: {e}") from None
    except RecursionError:
        raise ReviewError("body is nested too deeply") from None
    if not isinstance(doc, Mapping):
        raise ReviewError("body is not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != "AdmissionReview":
        raise ReviewError(
            f"expected apiVersion {API_VERSION} kind AdmissionReview, got "
            f"{doc.get('apiVersion')!r} {doc.get('kind')!r} (set admissionReviewVersions: [v1])"
        )
    req = doc.get("request")
    if not isinstance(req, Mapping) or not isinstance(req.get("uid"), str) or not req["uid"]:
        raise ReviewError("AdmissionReview has no request.uid")
    kind = req.get("kind") if isinstance(req.get("kind"), Mapping) else {}
    assert isinstance(kind, Mapping)
    return Review(
        uid=req["uid"],
        operation=str(req.get("operation", "")),
        kind=(str(kind.get("group", "")), str(kind.get("version", "")), str(kind.get("kind", ""))),
        namespace=str(req.get("namespace") or ""),
        dry_run=req.get("dryRun") is True,
        obj=req.get("object"),
        old_obj=req.get("oldObject"),
        user=_username(req.get("userInfo")),
    )


def _username(info: object) -> str:
    name = info.get("username") if isinstance(info, Mapping) else None
    return name if isinstance(name, str) else ""


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
