"""The history: ``--history DIR`` entries, ``mapc history`` and its page in headless Chromium."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from mapc.history import TREND, append_entry, read_history, trend_series
from mapc.history_html import render_history_html
from mapc.ir import UsageError, __version__
from tests.conftest import MAPC_SCRIPT
from tests.e2e.test_html_report import render
from tests.tracking.conftest import CNN, EXAMPLES, QUANTIZE, read

EPOCH = "1767225600"  # 2026-01-01T00:00:00Z


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SOURCE_DATE_EPOCH": EPOCH}
    return subprocess.run([MAPC_SCRIPT, *args], capture_output=True, text=True, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> Path:
    """Three compiles of the example CNN recorded in one history: float, a8w8, a16w8."""
    folder = tmp_path_factory.mktemp("history")
    for flags in ([], QUANTIZE, ["--quantize", "a16w8", "--calibration", "random"]):
        done = run("compile", *CNN, "--target", "npu", *flags, "-o", str(folder / "out.onnx"), "--history", str(folder / "h"), "-q", cwd=folder)
        assert done.returncode == 0, done.stderr
    return folder / "h"


def test_each_compile_appends_one_entry_with_hash_flags_and_version(history):
    digest = hashlib.sha256((EXAMPLES / "cnn.onnx").read_bytes()).hexdigest()
    assert sorted(p.name for p in history.iterdir()) == [f"00000{i}-{digest[:12]}.json" for i in (1, 2, 3)]
    entry = json.loads((history / f"000002-{digest[:12]}.json").read_text())
    assert entry["model_sha256"] == digest and entry["mapc_version"] == __version__
    assert entry["recorded_at"] == "2026-01-01T00:00:00Z"
    assert entry["flags"][:2] == ["compile", str(EXAMPLES / "cnn.onnx")] and "--quantize" in entry["flags"]
    assert entry["report"]["options"]["quantize"]["scheme"] == "a8w8" and entry["report"]["size"]["output"] > 0


def test_read_history_in_sequence_order(history):
    entries = read_history(history)
    assert [e.sequence for e in entries] == [1, 2, 3]
    assert [e.metrics.quantization for e in entries] == [None, "a8w8", "a16w8"]


def test_names_continue_after_the_highest_and_never_overwrite(tmp_path, history):
    report = json.loads(next(history.iterdir()).read_text())["report"]
    folder = tmp_path / "h"
    first = append_entry(folder, report, model=Path("m.onnx"), model_sha256="ab" * 32, flags=["compile"])
    (folder / "000007-abababababab.json").write_text(first.read_text())
    (folder / "notes.txt").write_text("not an entry")
    second = append_entry(folder, report, model=Path("m.onnx"), model_sha256="cd" * 32, flags=["compile"])
    assert (first.name, second.name) == ("000001-abababababab.json", "000008-cdcdcdcdcdcd.json")
    assert sorted(p.name for p in folder.iterdir()) == ["000001-abababababab.json", "000007-abababababab.json", "000008-cdcdcdcdcdcd.json", "notes.txt"]
    assert [e.sequence for e in read_history(folder)] == [1, 7, 8]


def test_a_taken_name_moves_to_the_next(tmp_path, history, monkeypatch):
    """Another compile claiming the same name first (between the listing and the link) is not overwritten."""
    report = json.loads(next(history.iterdir()).read_text())["report"]
    folder = tmp_path / "h"
    folder.mkdir()
    real_link = os.link

    def racing_link(source, target):
        if Path(target).name.startswith("000001-") and not Path(target).exists():
            Path(target).write_text("claimed by another compile")
        return real_link(source, target)

    monkeypatch.setattr(os, "link", racing_link)
    written = append_entry(folder, report, model=Path("m.onnx"), model_sha256="ef" * 32, flags=[])
    assert written.name == "000002-efefefefefef.json"
    assert (folder / "000001-efefefefefef.json").read_text() == "claimed by another compile"
    assert sorted(p.name for p in folder.iterdir()) == ["000001-efefefefefef.json", "000002-efefefefefef.json"]


def test_a_damaged_entry_is_a_one_line_error(tmp_path):
    (tmp_path / "000001-abababababab.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot be read"):
        read_history(tmp_path)
    (tmp_path / "000001-abababababab.json").write_text('{"history_version": 1, "report": {}}')
    with pytest.raises(UsageError, match="not a mapc compile report"):
        read_history(tmp_path)
    done = run("history", str(tmp_path / "missing"), cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.startswith("mapc: error: history ") and len(done.stderr.splitlines()) == 1


def test_mapc_history_prints_the_trend_and_json(history, tmp_path):
    done = run("history", str(history), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 compiles" in done.stdout and "MACs on the target" in done.stdout and "worst output SQNR" in done.stdout
    data = json.loads(run("history", str(history), "--json", cwd=tmp_path).stdout)
    entries = read_history(history)
    assert [d["metrics"]["partitions"] for d in data] == [e.metrics.partitions for e in entries]
    assert data[0]["metrics"]["worst_sqnr_db"] is None and data[1]["metrics"]["worst_sqnr_db"] == entries[1].metrics.worst_sqnr_db


def test_trend_keeps_metrics_some_compile_has(history):
    series = trend_series(read_history(history))
    assert [key for key, *_ in series] == [key for key, *_ in TREND]
    no_sqnr = trend_series(read_history(history)[:1])
    assert "worst_sqnr_db" not in [key for key, *_ in no_sqnr]


def test_the_history_page_renders_one_plot_per_metric(chromium, history, tmp_path):
    page = tmp_path / "history.html"
    done = run("history", str(history), "--html", str(page), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    source = page.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", source), "the page must not load anything from the network"
    dom = render(chromium, page)
    series = trend_series(read_history(history))
    assert f'data-plots="{len(series)}"' in dom
    widths = re.search(r'data-plot-widths="([^"]*)"', dom).group(1).split(",")
    assert len(widths) == len(series) and all(int(w) > 100 for w in widths), "every plot's line was laid out across the compiles"
    assert re.findall(r'data-metric="([^"]+)"', dom) == [key for key, *_ in series]
    assert dom.count("<circle") == sum(v is not None for *_, values in series for v in values)


def test_an_empty_history_page_says_so(tmp_path):
    assert "No compiles recorded yet." in render_history_html([], "empty")
    assert run("history", str(tmp_path), cwd=tmp_path).stdout.startswith("no compiles recorded in")


def test_history_reports_match_the_compile_reports(history, tmp_path):
    """What the history keeps is the report --report writes (the same compile, the same keys)."""
    report_path = tmp_path / "r.json"
    done = run("compile", *CNN, "--target", "npu", "-o", str(tmp_path / "o.onnx"), "--report", str(report_path), "--history", str(tmp_path / "h"), "-q", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [entry] = list((tmp_path / "h").iterdir())
    kept = json.loads(entry.read_text())["report"]
    written = read(report_path)
    assert set(kept) == set(written) and kept["coverage"] == written["coverage"] and kept["fallback"] == written["fallback"]


def test_compile_with_history_checks_relative_budgets_against_the_last_compile(tmp_path):
    budgets = tmp_path / "budgets.toml"
    budgets.write_text("no_new_fallback_reasons = true\nmax_partitions = 1\n")
    common = [*CNN, "--target", "npu", *QUANTIZE, "-o", str(tmp_path / "o.onnx"), "--history", str(tmp_path / "h"), "--expect", str(budgets)]
    first = run("compile", *common, "--junit", str(tmp_path / "first.xml"), "-q", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    skipped = [c.get("name") for c in ET.parse(tmp_path / "first.xml").getroot().iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["no_new_fallback_reasons"], "nothing recorded yet to compare with"
    second = run("compile", *common, "--cpu-ops", "Softmax", "-q", cwd=tmp_path)
    assert second.returncode == 1
    assert second.stderr.splitlines() == ["mapc: budget breached: no_new_fallback_reasons: new reasons: "
                                          + "; ".join(f"{code} on {', '.join(nodes)}" for code, nodes in read_history(tmp_path / "h")[-1].metrics.fallback.items())]
    assert len(list((tmp_path / "h").iterdir())) == 2, "the breaching compile is recorded too"
    assert read_history(tmp_path / "h")[0].metrics.fallback == {}
    third = run("compile", *common, "--cpu-ops", "Softmax", "-q", cwd=tmp_path)
    assert third.returncode == 0, "compared with the second compile, nothing is new"
