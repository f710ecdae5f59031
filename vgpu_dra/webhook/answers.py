"""The answers to recent review shapes: a bounded LRU, no I/O.

Up to the templates it ensures, the webhook's decision is a pure function of the
review less its uid (`review.review_shape`), of the settings (fixed for the
process) and of the cluster facts it read. The pods of one ReplicaSet, Job or
StatefulSet reach the webhook as reviews of one shape, so a shape seen before is
answered from here: its decision and its encoded response, valid while the facts
are equal to those it was decided with (an answer that read no facts stays valid).
What follows the decision (ensuring templates) is done for every review.

Bounded by entries and by the bytes of the shapes and encoded responses held; a
shape is at most `review.MAX_SHAPE_BYTES`, and the decision's objects are of the
size of its encoded patch.
"""

from __future__ import annotations

import functools
from collections import OrderedDict

from vgpu_dra.webhook.decision import Decision
from vgpu_dra.webhook.facts import ClusterFacts
from vgpu_dra.webhook.review import EncodedResponse, encode_response


class Answer:
    """A decision, the facts it was decided with (None: decided without any), and its
    response encoded once (on first use: the in-process `Admitter.admit` needs none)."""

    def __init__(self, decision: Decision, facts: ClusterFacts | None = None) -> None:
        self.decision = decision
        self.facts = facts

    @functools.cached_property
    def encoded(self) -> EncodedResponse:
        return encode_response(self.decision)

    def valid_with(self, facts: ClusterFacts) -> bool:
        return self.facts is facts or self.facts == facts


class AnswerCache:
    """Answers by review shape, least recently used first out."""

    def __init__(self, max_entries: int = 4096, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        """Lookups that found an entry."""
        self._entries: OrderedDict[bytes, Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def _cost(shape: bytes, answer: Answer) -> int:
        return len(shape) + answer.encoded.size

    def get(self, shape: bytes | None) -> Answer | None:
        if shape is None:
            return None
        answer = self._entries.get(shape)
        if answer is not None:
            self.hits += 1
            self._entries.move_to_end(shape)
        return answer

    def put(self, shape: bytes | None, answer: Answer) -> None:
        if shape is None or self.max_entries <= 0:
            return
        old = self._entries.pop(shape, None)
        if old is not None:
            self.bytes -= self._cost(shape, old)
        cost = self._cost(shape, answer)
        if cost > self.max_bytes:
            return
        self._entries[shape] = answer
        self.bytes += cost
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            key, dropped = self._entries.popitem(last=False)
            self.bytes -= self._cost(key, dropped)
