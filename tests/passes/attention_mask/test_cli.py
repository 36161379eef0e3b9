"""The mask flags of ``mapc compile`` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import onnx

from mapc.cli import main
from mapc.ir import load, run
from mapc.ir.errors import EXIT_OK, EXIT_USAGE

from .cases import TRANSFORMERS

MODEL = TRANSFORMERS / "llama-ts-sdpa.onnx"


def test_mask_as_input_writes_the_device_model_and_the_host_model(tmp_path, capsys):
    output = tmp_path / "llama.onnx"
    report = tmp_path / "report.json"
    code = main(["compile", str(MODEL), "-o", str(output), "--mask-as-input", "--mask-precision", "int16", "--report", str(report)])
    assert code == EXIT_OK
    host = tmp_path / "llama.additive_attention_mask.host.onnx"
    assert host.exists()
    printed = capsys.readouterr().out
    assert "additive_attention_mask" in printed and "host" in printed
    record = next(p for p in json.loads(report.read_text())["passes"] if p["name"] == "attention-mask")
    contract = record["details"]["hoisted_inputs"][0]
    assert contract["input"] == "additive_attention_mask" and "[-50, 0]" in contract["contract"]
    data = np.load(MODEL.with_suffix(".npz"))
    feeds = {k[len("input:"):]: data[k] for k in data.files if k.startswith("input:")}
    mask = run(onnx.load(host), feeds)["additive_attention_mask"]
    assert mask.min() == -50 and mask.max() == 0
    device = load(output)
    assert "attention_mask" not in {t.name for t in device.graph.inputs}
    outputs = run(device, {"input_ids": feeds["input_ids"], "additive_attention_mask": mask})
    np.testing.assert_allclose(outputs["logits"], data["output:logits"], rtol=1e-4, atol=1e-4)


def test_verify_feeds_a_hoisted_mask_input_from_its_host_model(tmp_path, capsys):
    """--verify runs the device model on the host model's mask (it failed on the missing input)."""
    code = main(["compile", str(MODEL), "-o", str(tmp_path / "llama.onnx"), "--mask-as-input", "--verify", "-q"])
    assert code == EXIT_OK, capsys.readouterr().err


def test_mask_value_reaches_the_pass(tmp_path):
    report = tmp_path / "report.json"
    assert main(["compile", str(MODEL), "-o", str(tmp_path / "out.onnx"), "-q", "--mask-value", "-64", "--report", str(report)]) == EXIT_OK
    record = next(p for p in json.loads(report.read_text())["passes"] if p["name"] == "attention-mask")
    assert record["details"]["mask_value"] == -64.0 and record["options"] == {"mask_value": -64.0}


def test_mask_flags_without_a_mask_pass_are_a_usage_error(tmp_path, capsys):
    code = main(["compile", str(MODEL), "-o", str(tmp_path / "out.onnx"), "--passes", "cleanup", "--mask-value", "-50"])
    assert code == EXIT_USAGE
    assert "attention-mask" in capsys.readouterr().err


def test_a_bad_mask_value_is_one_line_and_exit_2(tmp_path, capsys):
    code = main(["compile", str(MODEL), "-o", str(tmp_path / "out.onnx"), "--mask-value", "3"])
    assert code == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mask_value" in err


def test_verify_leaves_out_only_the_fully_masked_rows():
    import mapc
    from mapc.passes.attention_mask.verification import fully_masked_positions

    path = TRANSFORMERS / "gpt2-ts-eager.onnx"
    data = np.load(path.with_suffix(".npz"))
    feeds = {k[len("input:"):]: data[k] for k in data.files if k.startswith("input:")}
    feeds["attention_mask"] = np.array([[1] * 8, [0, 0, 0] + [1] * 5], np.int64)
    result = mapc.compile(path, verify=True, verify_inputs=feeds)
    assert result.verification["ok"]
    outputs = run(result.model, feeds)
    ignored = fully_masked_positions(result.model, feeds, outputs, -1e4)["last_hidden_state"]
    assert ignored[1, :3].all() and not ignored[1, 3:].any() and not ignored[0].any()
