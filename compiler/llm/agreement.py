"""How closely a split decodes like the export it came from, and calibration samples from decoding.

* :func:`measure_agreement`: for a few seeded prompts, the source export's greedy tokens are fed
  to the split teacher-forced; the split agrees on a token when its own greedy choice (argmax) at
  that step is the same. Logits are compared by SQNR over every step. In fp32 a correct split
  agrees on every token; quantized it is the number that says what was lost.
* :func:`record_calibration`: the feeds of every prefill and decode step while a float split
  decodes seeded prompts (short, exactly one chunk, chunked), written as ``.npz`` samples per
  graph: calibration on what the graphs really see (cache contents, masks with padding, rotary
  rows), which ``random`` cannot give.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mapc.llm.prompts import prompts
from mapc.llm.reference import DynamicDecoder, greedy_dynamic
from mapc.llm.runtime import StaticRunner, teacher_forced

#: Samples kept per graph for calibration (spread evenly over what decoding produced).
CALIBRATION_SAMPLES = 64
#: Prompts the agreement is measured on (8 new tokens each).
AGREEMENT_PROMPTS = 6
#: Prompts decoded for calibration (a third of them take two prefill chunks).
CALIBRATION_PROMPTS = 24


def measure_agreement(directory: str | os.PathLike, source: str | os.PathLike, roles: Mapping[str, str],
                      seed: int, new_tokens: int = 8) -> dict[str, Any]:
    """Teacher-forced token agreement and logits SQNR of the split in ``directory`` against ``source``."""
    runner = StaticRunner(directory)
    decoder = DynamicDecoder(source, dict(roles))  # one session for every prompt
    manifest = runner.manifest
    equal = total = 0
    signal = noise = 0.0
    for prompt in prompts(int(manifest["vocab_size"]), runner.context, int(manifest["prefill"]), seed, AGREEMENT_PROMPTS):
        steps = min(new_tokens, runner.context - len(prompt) + 1)
        tokens, expected = greedy_dynamic(decoder, prompt, steps)
        got = teacher_forced(runner, prompt, tokens)
        for reference, logits, token in zip(expected, got, tokens):
            equal += int(np.argmax(logits)) == token
            total += 1
            signal += float(np.sum(reference.astype(np.float64) ** 2))
            noise += float(np.sum((reference.astype(np.float64) - logits) ** 2))
    sqnr = None if noise == 0 else round(float(10 * np.log10(signal / noise)), 2)
    return {"tokens_equal": equal, "tokens": total, "logits_sqnr_db": sqnr,
            "method": "teacher-forced greedy tokens of the source export on seeded prompts"}


def cache_ranges(folders: Mapping[str, Path]) -> dict[str, list[float]]:
    """The real range of every cache tensor over the calibration samples of both graphs, given
    to its past input and its new output alike (``past_key.0`` and ``new_key.0``): one quantizer
    per layer and kind, so the host copies codes into its cache."""
    ranges: dict[str, list[float]] = {}
    for folder in folders.values():
        for path in sorted(Path(folder).glob("*.npz")):
            with np.load(path) as sample:
                for key in sample.files:
                    if key.startswith(("past_key.", "past_value.")):
                        values = sample[key]
                        low, high = ranges.get(key, [0.0, 0.0])
                        ranges[key] = [min(low, float(values.min())), max(high, float(values.max()))]
    tied = dict(ranges)
    tied.update({"new_" + key[len("past_"):]: value for key, value in ranges.items()})
    return tied


def record_calibration(directory: str | os.PathLike, destination: Path, names: Mapping[str, Mapping[str, str]],
                       seed: int) -> dict[str, Path]:
    """Decode seeded prompts with the float split in ``directory``; write each graph's feeds
    (inputs renamed by ``names[graph]``) as samples under ``destination/<graph>``."""
    recorded: dict[str, list[dict[str, np.ndarray]]] = {}
    runner = StaticRunner(directory, record=lambda graph, feeds: recorded.setdefault(graph, []).append(dict(feeds)))
    manifest = runner.manifest
    for prompt in prompts(int(manifest["vocab_size"]), runner.context, int(manifest["prefill"]), seed + 1, CALIBRATION_PROMPTS):
        runner.reset()
        logits = runner.prefill(prompt)
        while runner.filled < min(runner.context, len(prompt) + 8):
            logits = runner.step("decode", [int(np.argmax(logits))])
    folders = {}
    for graph, samples in recorded.items():
        folder = destination / graph
        folder.mkdir(parents=True, exist_ok=True)
        keep = np.unique(np.linspace(0, len(samples) - 1, min(CALIBRATION_SAMPLES, len(samples))).round().astype(int))
        rename = names.get(graph, {})
        for index in keep:
            np.savez(folder / f"sample_{index:04d}.npz", **{rename.get(k, k): v for k, v in samples[index].items()})
        folders[graph] = folder
    return folders
