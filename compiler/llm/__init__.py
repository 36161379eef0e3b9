"""Static LLMs for NPUs: ``mapc llm`` splits a decoder export with a KV cache into a prefill and a
decode graph over a fixed cache, and runs them.

* :func:`split` / :func:`write` (:mod:`.split`): the two graphs, compiled, with one shared
  weight file and a manifest (:mod:`.manifest`, the I/O contract of ``docs/llm.md``);
* :func:`generate` (:mod:`.runtime`): greedy decoding through a split folder in onnxruntime,
  the reference host loop;
* :func:`generate_dynamic` (:mod:`.reference`): the same with the original export;
* :func:`find_roles` (:mod:`.roles`): which input and output is which.
"""

from mapc.llm.manifest import read_manifest
from mapc.llm.reference import generate_dynamic
from mapc.llm.roles import DecoderRoles, find_roles
from mapc.llm.runtime import StaticRunner, generate
from mapc.llm.split import LLMOptions, StaticLLM, split, write

__all__ = [
    "DecoderRoles",
    "LLMOptions",
    "StaticLLM",
    "StaticRunner",
    "find_roles",
    "generate",
    "generate_dynamic",
    "read_manifest",
    "split",
    "write",
]
