"""Splits of the tiny decoder fixtures (tests/fixtures/llm), made once per session and shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from mapc.llm import LLMOptions, split, write

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "llm"
#: Every committed export: GPT-2 (dynamo), Llama, Qwen2, Phi-3 (TorchScript and dynamo).
MODELS = sorted(path.stem for path in FIXTURES.glob("*.onnx"))
CONTEXT = 24
PREFILL = 8


def fixture_path(name: str) -> Path:
    return FIXTURES / f"{name}.onnx"


@pytest.fixture(scope="session")
def splits(tmp_path_factory):
    """``splits(name, target)``: the folder of that fixture's split (made on first use)."""
    made: dict[tuple[str, str | None], tuple[Path, object]] = {}

    def get(name: str, target: str | None = None):
        key = (name, target)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"{name}-{target or 'float'}")
            llm = split(fixture_path(name), LLMOptions(context=CONTEXT, prefill=PREFILL, target=target))
            write(llm, folder)
            made[key] = (folder, llm)
        return made[key]

    return get
