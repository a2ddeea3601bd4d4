"""compare, sweep and recommend on real runs; the HTML report opened in headless Chromium."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from PIL import Image
from typer.testing import CliRunner

from edgevision.cli.app import app
from edgevision.reports.compare import Row, load_rows, mark_pareto, plot_png
from edgevision.errors import EdgevisionError
from edgevision.pipeline.sweep import sweep

runner = CliRunner()
FAST = {"calib_size": 8, "benchmark_iters": 3}


def row(model, variant, runtime, top1, p50):
    return Row(model, variant, runtime, top1, None, 100.0, p50, p50, p50 and 1000 / p50, 1.0, 1.0, "d", 10, "r", "cpu")


def test_pareto_frontier_marks_the_undominated():
    rows = [row("a", "fp32", "pytorch", 90, 10), row("a", "int8", "openvino", 89, 3),
            row("a", "fp32", "openvino", 90, 5), row("b", "int8", "openvino", 85, 4),
            row("b", "sim", "tensorrt-sim", 95, None)]
    mark_pareto(rows)
    assert [r.pareto for r in rows] == [False, True, True, False, False]  # untimed rows are never on it


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
    path = tmp_path / "plot.png"
    path.write_bytes(plot_png(load_rows([small_sweep])))
    image = Image.open(path).convert("L")
    assert image.size[0] >= 800 and len(set(image.getdata())) > 20  # axes, points, labels: many grey levels


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
    finally:
        driver.quit()


def test_sweep_resumes_after_a_kill(tmp_path):
    out = tmp_path / "grid"
    cmd = [sys.executable, "-m", "edgevision", "sweep", "convnext_mini", "--weights", "random", "--prune", "0,0.5",
           "--targets", "cpu", "--calib-size", "8", "--iters", "3", "--finetune-epochs", "0", "--out", str(out)]
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
    assert (out / "convnext_mini-prune0.5-cpu" / "report.json").exists()
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
