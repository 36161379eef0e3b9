"""The models the mask tests run on: the transformer exports and the built mask models,
with inputs (right padding as exported, and left padding that creates fully masked rows)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnx

from mapc.ir import load, seeded_inputs

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TRANSFORMERS = FIXTURES / "transformers"
MASKS = FIXTURES / "masks"
MANIFEST = json.loads((TRANSFORMERS / "manifest.json").read_text())["fixtures"]

#: Built models whose mask is causal (queries see keys up to their own position).
_CAUSAL_BUILT = {"whisper-decoder-causal", "intel-qwen3-offset", "intel-sliding-window", "intel-phi3-legacy", "intel-float-window"}


@dataclass(frozen=True)
class Case:
    name: str
    path: Path
    causal: bool
    families: tuple[str, ...]

    def proto(self) -> onnx.ModelProto:
        return _proto(self.path)

    def feeds(self, padding: str) -> dict[str, np.ndarray]:
        """Inputs: ``exported`` (the npz, right padding) or ``left`` (3 leading pads in row 1)."""
        if self.path.parent == TRANSFORMERS:
            data = np.load(self.path.with_suffix(".npz"))
            feeds = {key[len("input:"):]: data[key] for key in data.files if key.startswith("input:")}
        else:
            dims = {"batch": 2, "seq": 8, "past": 3, "total": 11}
            feeds = seeded_inputs(load(self.proto()), seed=1, dims=dims)
            if "attention_mask" in feeds:
                feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
                feeds["attention_mask"][1, -3:] = 0
        if padding == "left" and "attention_mask" in feeds:
            mask = np.ones_like(feeds["attention_mask"])
            mask[-1, :3] = 0
            feeds["attention_mask"] = mask
        return feeds

    def excluded(self, feeds: dict[str, np.ndarray], outputs: dict[str, np.ndarray], rows: np.ndarray | None) -> dict[str, np.ndarray]:
        """Per output, True where the element belongs to a fully masked query row.

        ``rows`` [batch, queries] marks the query rows that may attend no key (from
        :func:`fully_masked_rows`); the output axis holding the queries is found by its length.
        """
        if rows is None or not rows.any():
            return {}
        query_length = rows.shape[1]
        total = feeds["attention_mask"].shape[1] if "attention_mask" in feeds else query_length
        result = {}
        for name, value in outputs.items():
            ignore = np.zeros(value.shape, bool)
            if value.ndim >= 2 and value.shape[1] == query_length:
                ignore |= rows.reshape(rows.shape + (1,) * (value.ndim - 2))
            elif value.ndim == 4 and value.shape[2] == total:
                ignore[:, :, total - query_length:, :] |= rows[:, None, :, None]
            elif value.ndim == 4 and value.shape[2] == query_length:
                ignore |= rows[:, None, :, None]
            elif value.ndim == 2:
                ignore |= rows.any(axis=1)[:, None]
            result[name] = ignore
        return result


def fully_masked_rows(masks: list[np.ndarray], neg: float) -> np.ndarray | None:
    """Bool [batch, queries]: rows where some attention's additive mask holds NEG (or less) at
    every key, or its boolean mask (a native Attention op's) is False at every key. These are where the original models already disagree with each other
    (finfo.min gives a uniform average, -inf gives NaN or the SDPA guard's zeros, the ONNX
    Attention spec gives zeros) and the rewritten one softmaxes NEG-shifted scores: the leading
    pads of a left-padded causal model, the last pads of a sliding window, an all-padding row.
    Their outputs are padding that no consumer reads, so they are not compared."""
    rows = None
    for mask in masks:
        full = ~np.any(mask, axis=-1) if mask.dtype == np.bool_ else np.all(mask <= neg, axis=-1)  # [B|1, H|1, S|1]
        full = full.reshape((full.shape[0], -1, full.shape[-1])).any(axis=1)
        rows = full if rows is None else (rows | full)
    return rows


@cache
def _proto(path: Path) -> onnx.ModelProto:
    return onnx.load(path)


def transformer_cases() -> list[Case]:
    cases = []
    for name, entry in sorted(MANIFEST.items()):
        if entry.get("status") != "ok":
            continue
        causal = entry["architecture"] in ("gpt2", "llama")
        cases.append(Case(name, TRANSFORMERS / entry["file"], causal, tuple(entry.get("mask_families", []))))
    return cases


def built_cases() -> list[Case]:
    return [Case(path.stem, path, path.stem in _CAUSAL_BUILT, ()) for path in sorted(MASKS.glob("*.onnx"))]


ALL_CASES = transformer_cases() + built_cases()
