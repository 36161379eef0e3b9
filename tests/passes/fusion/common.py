"""Helpers shared by the fusion tests."""

from __future__ import annotations

from collections import Counter
from typing import Any

import onnx

from mapc.ir import Model
from mapc.passes.pipeline import PassRecord
from mapc.testing import assert_pass_preserves

#: Fusion reassociates float arithmetic (scale moved to the scores, x/c as x*(1/c), a fused
#: kernel's own summation order); on these small random models the float32 outputs agree within
#: mapc's default float32 tolerance (rtol 1e-4, atol 1e-5), which every check here uses.


def fuse(model: onnx.ModelProto, pipeline: Any = "fuse", **kwargs: Any) -> tuple[Model, PassRecord]:
    """Run ``pipeline`` with the full differential check; return the model and the last record."""
    rewritten, records = assert_pass_preserves(model, pipeline, **kwargs)
    return rewritten, records[-1]


def ops(model: Model) -> Counter:
    return Counter(node.op for node in model.graph.nodes)


def domains(model: Model) -> Counter:
    return Counter((node.domain or "", node.op) for node in model.graph.nodes)


def misses(record: PassRecord, rule: str | None = None) -> list[dict]:
    rules = record.details["rules"]
    return [m for name, r in rules.items() if rule in (None, name) for m in r["near_misses"]]
