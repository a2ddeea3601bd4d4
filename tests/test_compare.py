"""compare, sweep and recommend on real runs; the HTML report opened in headless Chromium."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.errors import EdgevisionError
from edgevision.pipeline.sweep import sweep
from edgevision.reports.compare import Comparison, Row, load_comparison, load_rows, mark_pareto, rich_table
from edgevision.reports.compare_plot import overlapping, plot_comparison

runner = CliRunner()
FAST = {"calib_size": 8, "benchmark_iters": 3}


def row(model, variant, runtime, top1, p50, speedup=1.0, agreement=100.0, role="candidate", selected=False):
    return Row(model, variant, runtime, top1, None, agreement, p50, p50, p50 and 1000 / p50, 1.0, speedup, "d", 10,
               "r", "cpu", role, selected=selected)


def test_pareto_frontier_is_each_models_own():
    rows = [row("a", "fp32", "pytorch", 90, 10), row("a", "int8", "openvino", 89, 3),
            row("a", "fp32", "openvino", 90, 5), row("b", "int8", "openvino", 85, 4),
            row("b", "fp32", "pytorch", 86, 9), row("b", "sim", "tensorrt-sim", 95, None)]
    mark_pareto(rows)
    # b's int8 is slower and less accurate than a's, yet on b's own frontier; untimed rows are never on one
    assert [r.pareto for r in rows] == [False, True, True, True, True, False]


def crowded_rows():
    """Four models, five variants each, at the speedups and agreements a random-weights sweep gives."""
    rows = []
    for i, (model, ms) in enumerate([("convnext_t", 120), ("swin_t", 140), ("vit_b", 280), ("maxvit_t", 160)]):
        for variant, runtime, speedup, agreement, role in [
                ("fp32", "pytorch", 1.0, 100.0, "reference"), ("fp32", "openvino", 1.34 + i / 50, 100.0, "candidate"),
                ("int8", "openvino", 1.24 + i / 40, 92.3, "candidate"),
                ("int8", "onnxruntime", 1.5 + i / 10, 92.3 - 7.7 * (i % 2), "candidate"),
                ("pruned 50%", "pytorch", 1.4 + i / 30, 84.6, "pruned"),
                ("pruned 50% + int8", "openvino", 2.4 + i / 20, 76.9, "candidate")]:
            rows.append(row(model, variant, runtime, None, ms / speedup, speedup, agreement, role,
                            selected=runtime == "onnxruntime"))
    mark_pareto(rows)
    return rows


def test_plot_labels_of_a_crowded_four_model_sweep_do_not_overlap():
    plot = plot_comparison(crowded_rows(), labelled=False, title="t")
    assert plot.labels in ("labels", "keys") and len(plot.label_boxes) >= 20  # every non-reference point named
    assert overlapping(plot.label_boxes) == []
    assert all(0 <= b.x0 < b.x1 <= plot.width and 0 <= b.y0 < b.y1 <= plot.height for b in plot.label_boxes)
    image = Image.open(io.BytesIO(plot.png)).convert("L")
    assert image.size == (plot.width, plot.height)
    for b in plot.label_boxes:  # each box holds its drawn label: dark text pixels inside it
        assert min(image.crop((int(b.x0), int(b.y0), int(b.x1) + 1, int(b.y1) + 1)).getdata()) < 100, b.text


def test_a_cluster_of_int8_variants_a_few_percent_apart_still_gets_keys():
    """A 2 x 2 OpenVINO sweep as a CPU with bf16 measured it: each model's INT8, INT8-bf16 and int8-mixed points a
    few percent apart in speed. Numbered keys one per point collided there and the plot went unlabelled; nearby
    points now share a key."""
    rows = []
    for model, points in [("convnext_mini", [("fp32", "pytorch", 1.0, 100.0, "reference", False),
                                             ("fp32", "openvino", 4.85, 100.0, "candidate", False),
                                             ("int8", "openvino", 6.52, 100.0, "candidate", False),
                                             ("int8-bf16", "openvino", 6.87, 100.0, "candidate", True),
                                             ("int8-mixed", "openvino", 6.4, 100.0, "candidate", False),
                                             ("pruned 50%", "pytorch", 1.31, 0.0, "pruned", False),
                                             ("pruned 50% + fp32", "openvino", 8.26, 0.0, "candidate", False),
                                             ("pruned 50% + int8", "openvino", 8.65, 0.0, "candidate", False),
                                             ("pruned 50% + int8-bf16", "openvino", 9.02, 0.0, "candidate", True)]),
                          ("vit_mini", [("fp32", "pytorch", 1.0, 100.0, "reference", False),
                                        ("fp32", "openvino", 2.07, 100.0, "candidate", False),
                                        ("int8", "openvino", 3.34, 100.0, "candidate", False),
                                        ("int8-bf16", "openvino", 3.45, 100.0, "candidate", False),
                                        ("int8-mixed", "openvino", 3.5, 100.0, "candidate", True),
                                        ("pruned 50%", "pytorch", 1.15, 76.9, "pruned", False),
                                        ("pruned 50% + fp32", "openvino", 2.88, 76.9, "candidate", False),
                                        ("pruned 50% + int8", "openvino", 4.0, 84.6, "candidate", False),
                                        ("pruned 50% + int8-bf16", "openvino", 4.06, 84.6, "candidate", True)])]:
        for variant, runtime, speedup, agreement, role, selected in points:
            rows.append(row(model, variant, runtime, None, 1.9 / speedup, speedup, agreement, role, selected))
    mark_pareto(rows)
    plot = plot_comparison(rows, labelled=False, title="t")
    assert plot.labels in ("labels", "keys") and plot.label_boxes and overlapping(plot.label_boxes) == []


def test_points_drawn_on_one_spot_share_one_label():
    rows = [row("m", "fp32", "pytorch", None, 10.0, 1.0, role="reference"),
            row("m", "fp32", "openvino", None, 3.0, 3.33), row("m", "int8-bf16", "openvino", None, 3.01, 3.32),
            row("m", "int8", "openvino", None, 2.0, 5.0, 92.3)]
    mark_pareto(rows)
    plot = plot_comparison(rows, labelled=False, title="t")
    assert plot.labels == "labels" and overlapping(plot.label_boxes) == []
    assert sorted(b.text for b in plot.label_boxes) == ["OV", "OV, OV bf16", "PyTorch FP32 (each model's reference)"]


def test_alike_points_of_two_models_on_one_spot_share_one_text():
    rows = [row(m, "fp32", "pytorch", None, 10.0, 1.0, role="reference") for m in ("a", "b")]
    rows += [row("a", "int8-bf16", "openvino", None, 2.0, 5.0, 92.3),
             row("b", "int8-bf16", "openvino", None, 2.0, 5.01, 92.3)]
    mark_pareto(rows)
    plot = plot_comparison(rows, labelled=False, title="t")
    assert sorted(b.text for b in plot.label_boxes) == ["OV bf16", "PyTorch FP32 (each model's reference)"]


def test_label_layout_is_the_same_on_a_slow_machine(monkeypatch):
    """adjustText is bounded by iterations, not seconds: a machine where every step takes a tenth of a second
    (adjustText's clock made to run that fast) gets the same plot, not a less untangled one."""
    import itertools

    import adjustText

    here = plot_comparison(crowded_rows(), labelled=False, title="t")
    ticks = itertools.count()
    monkeypatch.setattr(adjustText, "timer", lambda: next(ticks) / 10)
    slow = plot_comparison(crowded_rows(), labelled=False, title="t")
    assert next(ticks) > 0  # adjustText read the patched clock
    assert slow.labels == here.labels and slow.label_boxes == here.label_boxes


def test_overlap_check_sees_intersecting_boxes():
    from edgevision.reports.compare_plot import LabelBox

    boxes = [LabelBox("a", 0, 0, 10, 10), LabelBox("b", 9, 9, 20, 20), LabelBox("c", 10, 0, 15, 5)]
    assert overlapping(boxes) == [("a", "b")]


def test_narrow_table_fits_80_columns_and_names_each_model_once():
    from rich.console import Console

    comparison = Comparison(crowded_rows(), ["weights are random: accuracy numbers are meaningless (convnext_t)"])
    console = Console(width=80, record=True)
    console.print(rich_table(comparison))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "…" not in text
    for model in ("convnext_t", "swin_t", "vit_b", "maxvit_t"):
        assert sum(line.split()[:1] == [model] for line in text.splitlines()) == 1  # its group's heading, once
    assert "pruned 50% + int8" in text and "pick" in text and "caveat: weights are random" in text
    wide = Console(width=250, record=True)
    wide.print(rich_table(comparison, wide=True))
    wide_text = wide.export_text()
    assert "img/s (batch 1)" in wide_text and "onnxruntime" in wide_text


@pytest.fixture(scope="module")
def small_sweep(tmp_path_factory):
    """A real 2 x 2 sweep: convnext_mini and vit_mini, unpruned and 50% pruned, cpu target, builtin:photos."""
    out = tmp_path_factory.mktemp("sweeps") / "grid"
    result = sweep(["convnext_mini", "vit_mini"], [0.0, 0.5], ["cpu"], out, weights="random",  # OpenVINO only
                   overrides={**FAST, "runtime": "openvino", "prune": {"finetune_epochs": 0}}, progress=False)
    assert len(result.done) == 4 and not result.skipped
    return out


def test_compare_table_files_and_mixed_data_refusal(small_sweep, tmp_path):
    rows = load_rows([small_sweep])
    variants = {(r.model, r.variant, r.runtime) for r in rows}
    assert ("convnext_mini", "fp32", "pytorch") in variants
    assert ("vit_mini", "pruned 50% + int8", "openvino") in variants
    assert sum(1 for r in rows if r.variant == "fp32" and r.runtime == "pytorch") == 2  # one reference per model
    assert any(r.pareto for r in rows)
    done = runner.invoke(app, ["compare", str(small_sweep), "--plot", str(tmp_path / "p.png"), "--markdown",
                               str(tmp_path / "t.md"), "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["written"] == {"png": str(tmp_path / "p.png"), "md": str(tmp_path / "t.md")}
    assert "| vit_mini | pruned 50% + int8 | openvino |" in (tmp_path / "t.md").read_text()
    # a run on other data is refused, unless asked
    other = tmp_path / "other"
    shutil.copytree(small_sweep / "convnext_mini-prune0-cpu", other)
    report = json.loads((other / "report.json").read_text())
    report["data"]["spec"], report["data"]["images"] = "builtin:fashion-mnist:test", 500
    (other / "report.json").write_text(json.dumps(report))
    mixed = runner.invoke(app, ["compare", str(small_sweep), str(other)])
    assert mixed.exit_code == 2 and "different data" in mixed.output and "--allow-mixed" in mixed.output
    assert len(mixed.output.strip().splitlines()) == 1
    assert runner.invoke(app, ["compare", str(small_sweep), str(other), "--allow-mixed"]).exit_code == 0


def test_plot_is_not_blank(small_sweep, tmp_path):
    comparison = load_comparison([small_sweep])
    plot = plot_comparison(comparison.rows, comparison.labelled, "t")
    image = Image.open(io.BytesIO(plot.png)).convert("L")
    assert image.size[0] >= 800 and len(set(image.getdata())) > 20  # axes, points, labels: many grey levels
    assert plot.label_boxes and overlapping(plot.label_boxes) == []


def test_compare_marks_selected_variants_and_carries_the_runs_caveats(small_sweep, tmp_path):
    comparison = load_comparison([small_sweep])
    for run in {r.run for r in comparison.rows}:
        report = json.loads((Path(run) / "report.json").read_text())
        picked = [r for r in comparison.rows if r.run == run and r.selected]
        assert [(r.variant.split(" + ")[-1], r.runtime) for r in picked] == [tuple(report["selection"]["selected"]
                                                                                 .split("/"))]
    caveats = "\n".join(comparison.caveats)
    assert "weights are random" in caveats and "convnext_mini" in caveats and "vit_mini" in caveats
    images = comparison.rows[0].images
    assert f"only {images} images" in caveats and f"{100 / images:.2f} points" in caveats
    assert "different CPUs" not in caveats
    # a run timed on another CPU, an hour later: both said
    other = tmp_path / "other"
    shutil.copytree(small_sweep / "convnext_mini-prune0-cpu", other)
    report = json.loads((other / "report.json").read_text())
    report["benchmark"]["cpu_profile"]["model"] = "Some Other CPU"
    (other / "report.json").write_text(json.dumps(report))
    later = time.time() + 3600
    os.utime(other / "report.json", (later, later))
    caveats = "\n".join(load_comparison([small_sweep, other]).caveats)
    assert "different CPUs" in caveats and "Some Other CPU" in caveats and "minutes apart" in caveats
    done = runner.invoke(app, ["compare", str(small_sweep), "--json"])
    assert json.loads(done.stdout)["caveats"] == comparison.caveats


def chromium_driver():
    pytest.importorskip("selenium", reason="selenium not installed")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1400,2000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_html_report_renders_table_and_plot_in_headless_chromium(small_sweep, tmp_path):
    from selenium.webdriver.common.by import By

    html = tmp_path / "report.html"
    assert runner.invoke(app, ["compare", str(small_sweep), "--html", str(html)]).exit_code == 0
    text = html.read_text()
    assert 'src="http' not in text and 'href="http' not in text and "<script" not in text  # opens offline
    driver = chromium_driver()
    try:
        driver.get(html.as_uri())
        rows = driver.find_elements(By.CSS_SELECTOR, "#variants tbody tr")
        assert len(rows) == len(load_rows([small_sweep]))
        assert "pruned 50% + int8" in driver.find_element(By.ID, "variants").text
        plot = driver.find_element(By.ID, "plot")
        assert driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", plot) > 500
        shot = tmp_path / "plot-shot.png"
        plot.screenshot(str(shot))
        pixels = Image.open(shot).convert("L")
        assert len(set(pixels.getdata())) > 20  # rendered, not a blank box
        _assert_labels_apart_on_screen(driver, plot, pixels)
        caveats = driver.find_element(By.ID, "caveats")
        assert caveats.is_displayed() and caveats.size["height"] > 10
        assert "weights are random" in caveats.text and "images of builtin:photos evaluated" in caveats.text
    finally:
        driver.quit()


def _assert_labels_apart_on_screen(driver, plot, shot):
    """The label boxes the plot's layout produced, scaled to the image as the browser drew it: none overlaps
    another, and each holds dark (text) pixels in the screenshot."""
    from edgevision.reports.compare_plot import LabelBox

    boxes = json.loads(plot.get_attribute("data-label-boxes"))
    natural = driver.execute_script("return arguments[0].naturalWidth", plot)
    scale = shot.size[0] / natural
    scaled = [LabelBox(b["text"], *(b[k] * scale for k in ("x0", "y0", "x1", "y1"))) for b in boxes]
    assert scaled and overlapping(scaled) == []
    for b in scaled:
        crop = shot.crop((int(b.x0), int(b.y0), int(b.x1) + 1, int(b.y1) + 1))
        assert min(crop.getdata()) < 110, f"label {b.text!r} not drawn where its box says"


def test_sweep_resumes_after_a_kill(tmp_path):
    out = tmp_path / "grid"
    cmd = [sys.executable, "-m", "edgevision", "sweep", "convnext_mini", "--weights", "random", "--prune", "0,0.5",
           "--targets", "cpu", "--runtime", "openvino", "--calib-size", "8", "--iters", "3", "--finetune-epochs", "0",
           "--out", str(out)]
    first = out / "convnext_mini-prune0-cpu" / "report.json"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert first.exists(), "the first cell never finished"
    os.killpg(proc.pid, signal.SIGKILL)  # mid-way through the second cell (or just after it)
    proc.wait()
    stamp = first.stat().st_mtime_ns
    done = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert "convnext_mini-prune0-cpu" in result["skipped"]
    assert first.stat().st_mtime_ns == stamp  # not redone
    second = json.loads((out / "convnext_mini-prune0.5-cpu" / "report.json").read_text())
    assert {v["runtime"] for v in second["variants"]} == {"pytorch", "openvino"}  # --runtime pinned every cell
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no half-written cell left behind
    changed = subprocess.run(cmd[:-2] + ["--prune", "0"] + ["--out", str(out)], capture_output=True, text=True)
    assert changed.returncode == 2 and "other settings" in changed.stderr


def test_recommend_answers_from_the_measurements(small_sweep):
    done = runner.invoke(app, ["recommend", str(small_sweep), "--target", "cpu", "--max-latency-ms", "1000",
                               "--max-drop", "100", "--json"])
    assert done.exit_code == 0, done.output
    result = json.loads(done.stdout)
    questions = [c["question"] for c in result["checklist"]]
    assert questions == ["data size", "target device", "latency budget", "accuracy budget", "task", "memory"]
    pick = result["recommendation"]
    assert pick["runtime"] in ("openvino", "onnxruntime") and pick["latency_ms_p50"] <= 1000  # the cpu runtimes
    assert {m["run"] for m in result["measurements"]} >= {pick["run"]}
    impossible = runner.invoke(app, ["recommend", str(small_sweep), "--max-latency-ms", "0.0001"])
    assert impossible.exit_code == 3 and "closest" in impossible.output
    jetson = runner.invoke(app, ["recommend", str(small_sweep), "--target", "jetson", "--max-latency-ms", "5"])
    assert jetson.exit_code == 2 and "on the device" in jetson.output


def test_compare_errors_are_one_line(tmp_path):
    done = runner.invoke(app, ["compare", str(tmp_path)])
    assert done.exit_code == 2 and "no edgevision run" in done.output
    with pytest.raises(EdgevisionError, match="not a run directory"):
        load_rows([tmp_path / "missing"])
    bad = runner.invoke(app, ["sweep", "convnext_mini", "--prune", "half", "--out", str(tmp_path / "s")])
    assert bad.exit_code == 2 and "comma-separated list of numbers" in bad.output
