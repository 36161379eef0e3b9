"""Export real-size transformers (random weights) for ``benchmarks/qnn.py``: the models its
fixtures are too small to stand for.

* ``llama2l``: a Llama-class decoder with 2 layers at TinyLlama's width (hidden 2048, MLP 5632,
  32 query heads over 4 key/value heads, vocabulary 32000, 2048 positions), no KV cache: inputs
  ``input_ids`` and ``attention_mask`` [batch, seq], output ``logits``; 880 MB of fp32 weights.
* ``bert-base``: BERT-base (12 layers, hidden 768, vocabulary 30522): outputs
  ``last_hidden_state`` and ``pooler_output``.

Either exporter: ``ts`` is the TorchScript exporter (opset 17, ``dynamo=False``, eager
attention), ``dynamo`` the dynamo exporter (its default opset, ``optimize=True``, SDPA
attention), both with symbolic ``batch`` and ``seq``. Weights come from ``torch.manual_seed(0)``.

Needs torch and transformers, which mapc never imports: run it in a venv of its own, e.g.
``python3 -m venv /tmp/export && /tmp/export/bin/pip install torch transformers onnx onnxscript``,
then::

    /tmp/export/bin/python benchmarks/export_real_size.py llama2l ts /tmp/models/llama2l-ts-eager.onnx
    python benchmarks/qnn.py --models llama2l-ts=/tmp/models/llama2l-ts-eager.onnx --dim batch=1 --dim seq=128
"""

from __future__ import annotations

import argparse


def build(name: str, attention: str):
    """The model (eval mode), its config and its outputs' symbolic axes by name."""
    import torch
    import transformers

    torch.manual_seed(0)
    if name == "llama2l":
        config = transformers.LlamaConfig(
            hidden_size=2048, intermediate_size=5632, num_attention_heads=32, num_key_value_heads=4,
            vocab_size=32000, num_hidden_layers=2, max_position_embeddings=2048,
        )  # fmt: skip
        inner = transformers.LlamaForCausalLM._from_config(config, attn_implementation=attention)
        outputs = {"logits": {0: "batch", 1: "seq"}}

        def forward(input_ids, attention_mask):
            return inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    else:
        config = transformers.BertConfig()
        inner = transformers.BertModel._from_config(config, attn_implementation=attention)
        outputs = {"last_hidden_state": {0: "batch", 1: "seq"}, "pooler_output": {0: "batch"}}

        def forward(input_ids, attention_mask):
            result = inner(input_ids=input_ids, attention_mask=attention_mask)
            return result.last_hidden_state, result.pooler_output

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return forward(input_ids, attention_mask)

    return Wrapper().eval(), config, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["llama2l", "bert-base"])
    parser.add_argument("exporter", choices=["ts", "dynamo"])
    parser.add_argument("output")
    args = parser.parse_args()

    import torch

    model, config, outputs = build(args.model, "eager" if args.exporter == "ts" else "sdpa")
    ids = torch.randint(0, config.vocab_size, (1, 128))
    mask = torch.ones(1, 128, dtype=torch.long)
    names = ["input_ids", "attention_mask"]
    with torch.no_grad():
        if args.exporter == "ts":
            axes = {**{name: {0: "batch", 1: "seq"} for name in names}, **outputs}
            torch.onnx.export(model, (ids, mask), args.output, input_names=names, output_names=list(outputs),
                              dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip
        else:
            batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=2048)
            torch.onnx.export(model, (ids, mask), args.output, input_names=names, output_names=list(outputs),
                              dynamic_shapes={name: {0: batch, 1: seq} for name in names},
                              dynamo=True, optimize=True, external_data=False)  # fmt: skip
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
