"""Rate-distortion evaluation (tooling/evaluate.py, `minstf eval`): BD-rate on hand-computed curves,
the Pillow baselines on tiny images, and the command on two small images with the small
random-weight model of test_codec.py (its numbers mean nothing; the layout does); the command
on a real Dask LocalCluster of 2 worker processes gives the numbers of an in-process run."""
import importlib.util
import io
import json
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, features
from threadpoolctl import threadpool_limits

from minstf.cli import main
from minstf.errors import BadInput, MinstfError
from minstf.tooling import cluster
from minstf.tooling import evaluate as ev
from minstf.tooling.evaluate import bd_psnr, bd_rate, evaluate_pillow, image_paths, plot_rd

from test_codec import sample_image, small_weights  # noqa: F401 (a fixture)

RATE = np.array([0.1, 0.25, 0.5, 1.0, 2.0])
PSNR = 30 + 4 * np.log(RATE)       # PSNR linear in ln(rate): every fit reproduces it exactly
METHODS = ("cubic", "pchip")
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


# --- Bjontegaard deltas -------------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_bd_rate_of_a_curve_with_10_percent_fewer_bits(method):
    assert bd_rate(RATE, PSNR, 0.9 * RATE, PSNR, method) == pytest.approx(-10.0, abs=1e-9)
    assert bd_rate(0.9 * RATE, PSNR, RATE, PSNR, method) == pytest.approx(100 / 0.9 - 100, abs=1e-9)
    assert bd_rate(RATE, PSNR, RATE, PSNR, method) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_bd_rate_and_psnr_of_a_curve_1_db_higher(method):
    # PSNR = 30 + 4 ln R: 1 dB more at equal rate is ln R lower by 1/4 at equal PSNR,
    # i.e. a rate ratio of exp(-1/4) (-22.12 %), over the overlap 31..(30 + 4 ln 2) dB
    assert bd_rate(RATE, PSNR, RATE, PSNR + 1, method) == pytest.approx(100 * (np.exp(-0.25) - 1), abs=1e-9)
    assert bd_psnr(RATE, PSNR, RATE, PSNR + 1, method) == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr(RATE, PSNR, 0.9 * RATE, PSNR, method) == pytest.approx(-4 * np.log(0.9), abs=1e-9)


def test_bd_rate_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate(RATE, PSNR, RATE, PSNR + 20)
    with pytest.raises(ValueError, match="at least 4"):
        bd_rate(RATE[:3], PSNR[:3], RATE, PSNR)
    assert bd_rate(RATE[:3], PSNR[:3], 0.9 * RATE, PSNR, "pchip") == pytest.approx(-10.0, abs=1e-9)
    with pytest.raises(ValueError, match="positive"):
        bd_rate(-RATE, PSNR, RATE, PSNR)


# --- Pillow baselines ---------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path):
    for name, (h, w, seed) in {"b.png": (48, 40, 2), "a.png": (32, 56, 1)}.items():
        Image.fromarray(sample_image(h, w, seed)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


@pytest.mark.parametrize("codec, fmt", [("jpeg", "JPEG"), ("webp", "WEBP"), ("avif", "AVIF")])
def test_evaluate_pillow(folder, codec, fmt):
    if not features.check(codec if codec != "jpeg" else "jpg"):
        pytest.skip(f"this Pillow has no {fmt}")
    paths = image_paths(folder)
    assert [p.name for p in paths] == ["a.png", "b.png"]
    rows = evaluate_pillow(codec, 50, paths)
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    buf = io.BytesIO()
    Image.open(paths[0]).save(buf, format=fmt, quality=50, **({"subsampling": "4:2:0"} if fmt != "WEBP" else {}))
    assert rows[0]["bpp"] == 8 * len(buf.getvalue()) / (32 * 56)
    for r in rows:
        assert 10 < r["psnr-rgb"] < 60 and 0 < r["ms-ssim-rgb"] <= 1
        assert r["encoding_time"] >= 0 and r["decoding_time"] >= 0
    with pytest.raises(BadInput, match="quality"):
        evaluate_pillow(codec, 101, paths)


def test_plot_without_matplotlib_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import matplotlib -> ImportError
    with pytest.raises(MinstfError, match="pip install matplotlib"):
        plot_rd([], io.BytesIO())


# --- the command ---------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["eval", *map(str, args)])


def test_eval_command(folder, tmp_path_factory, small_weights, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(small_weights))
    out = tmp_path_factory.mktemp("eval-out")
    plot = [] if HAVE_MATPLOTLIB else ["--no-plot"]
    args = [folder, "--out", out, "--qualities", "2", "--baselines", "webp,jpeg",
            "--jpeg-qualities", "20,50,80", "--webp-qualities", "20,50,80", *plot]
    r = run(*args)
    assert r.exit_code == 0, (r.output, r.exception)
    assert "minstf vs JPEG     not computable" in r.stdout       # one rate point is no curve
    assert "WebP vs JPEG" in r.stdout
    assert "overlapping PSNR range" in r.stdout
    # stderr is no terminal here: one line per finished task (2 images x 7 rate points), no bar
    lines = [line for line in r.stderr.splitlines() if line.startswith("minstf: eval: ")]
    assert len(lines) == 14 and "(14/14 tasks" in lines[-1] and "evaluating" not in r.stderr
    assert any(", minstf q2 (" in line for line in lines) and any(", JPEG q50 (" in line for line in lines), lines
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["minstf.json", "jpeg.json", "webp.json"] + (["rd.png"] if HAVE_MATPLOTLIB else []))
    if HAVE_MATPLOTLIB:
        assert (out / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    res = json.loads((out / "minstf.json").read_text())
    assert res["name"] == "minstf" and "psnr-float" in res["description"]
    results = res["results"]
    assert results["quality"] == [2]
    for key in ("psnr-rgb", "ms-ssim-rgb", "bpp", "payload-bpp", "estimated-bpp", "psnr-float",
                "encoding_time", "decoding_time"):
        assert len(results[key]) == 1, key
    for point, mean_bpp in zip(res["per_image"], results["bpp"]):
        rows = point["images"]
        assert [row["image"] for row in rows] == ["a.png", "b.png"]
        assert mean_bpp == pytest.approx(np.mean([row["bpp"] for row in rows]))
        for row in rows:
            assert row["bpp"] > row["payload-bpp"] > 0           # the header counts in the file
            assert row["estimated-bpp"] == pytest.approx(row["payload-bpp"], rel=0.15)
            assert row["forward-matches-decoded"]                  # float32 mode: same operations
            assert row["psnr-float"] == pytest.approx(row["psnr-rgb"], abs=0.5)

    jpeg = json.loads((out / "jpeg.json").read_text())
    assert jpeg["name"] == "JPEG" and "4:2:0" in jpeg["description"]
    assert jpeg["results"]["quality"] == [20, 50, 80]
    assert set(jpeg["results"]) == {"quality", "psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"}
    assert len(jpeg["per_image"]) == 3

    r = run(*args)                                                 # outputs exist: refused before any work
    assert r.exit_code == 8 and "--force" in r.stderr
    r = run(*args, "--workers", 2, "--scheduler", "tcp://127.0.0.1:1")
    assert r.exit_code == 2 and "give --workers or --scheduler, not both" in r.stderr


def test_eval_usage_errors(folder, small_weights, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(small_weights))
    q1 = small_weights / "stf-small-q1.safetensors"
    r = run(folder, "--out", tmp_path / "o", "--qualities", "1", "--weights", q1)
    assert r.exit_code == 2 and "not both" in r.stderr
    r = run(folder, "--out", tmp_path / "o", "--qualities", "none", "--baselines", "gif")
    assert r.exit_code == 3 and "unknown baseline" in r.stderr
    r = run(folder, "--out", tmp_path / "o", "--qualities", "x")
    assert r.exit_code == 2
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty", "--out", tmp_path / "o", "--qualities", "none", "--baselines", "jpeg")
    assert r.exit_code == 3 and "no PNG or JPEG images" in r.stderr


# --- on a Dask cluster of 2 worker processes -----------------------------------------------

@pytest.fixture(scope="module")
def dask_client():
    pytest.importorskip("dask.distributed", reason="the Dask tests need minstf[dask] (dask[distributed])")
    with cluster.client(workers=2) as client:
        yield client


def without_times(result):
    """A JSON result less its times (measured where each image ran) and the description's
    sentence that says where that was."""
    drop = ("encoding_time", "decoding_time")
    return {"name": result["name"], "description": result["description"].split(" Times: ")[0],
            "results": {k: v for k, v in result["results"].items() if k not in drop},
            "per_image": [{**p, "images": [{k: v for k, v in row.items() if k not in drop} for row in p["images"]]}
                          for p in result["per_image"]]}


def test_eval_on_dask_matches_in_process(folder, tmp_path, small_weights, dask_client, monkeypatch):  # noqa: F811
    """The same numbers, exactly: this process runs BLAS on as many threads as each worker (the
    float32 synthesis, hence PSNR and MS-SSIM, depends on the BLAS thread count; bpp does not)."""
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(small_weights))  # read here: workers get the paths
    plot = [] if HAVE_MATPLOTLIB else ["--no-plot"]
    args = [folder, "--qualities", "2", "--baselines", "jpeg,webp", "--jpeg-qualities", "20,50",
            "--webp-qualities", "30", *plot]
    with threadpool_limits(cluster.worker_threads(2)):
        here = run(*args, "--out", tmp_path / "here")
    there = run(*args, "--out", tmp_path / "dask", "--scheduler", dask_client.scheduler.address)
    assert here.exit_code == 0 and there.exit_code == 0, (here.output, there.output, there.exception)
    assert f"minstf: dask: 2 workers ({dask_client.scheduler.address})" in there.stderr
    assert [line[:60] for line in here.stdout.splitlines()] == [line[:60] for line in there.stdout.splitlines()]
    for name in ("minstf.json", "jpeg.json", "webp.json"):          # everything but the times
        a, b = (json.loads((tmp_path / d / name).read_text()) for d in ("here", "dask"))
        assert without_times(a) == without_times(b), name
        assert "in one process" in a["description"] and "on the Dask worker" in b["description"]
        assert all(row["encoding_time"] > 0 for p in b["per_image"] for row in p["images"])
    if HAVE_MATPLOTLIB:                                             # drawn from the same numbers
        assert (tmp_path / "here" / "rd.png").read_bytes() == (tmp_path / "dask" / "rd.png").read_bytes()
    loads = dask_client.run(lambda: len(__import__("minstf.batch").batch.LOADS))
    assert sorted(loads.values()) in ([0, 1], [1, 1])               # each worker: the q2 model once


def test_eval_on_dask_a_bad_image_fails_once(folder, tmp_path, small_weights, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MINSTF_WEIGHTS_DIR", str(small_weights))
    pytest.importorskip("dask.distributed", reason="the Dask tests need minstf[dask] (dask[distributed])")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes((folder / "a.png").read_bytes())
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    t = time.perf_counter()
    r = run(tmp_path / "in", "--out", tmp_path / "out", "--qualities", "2", "--baselines", "jpeg",
            "--jpeg-qualities", "20,50", "--no-plot", "--workers", "2")   # a LocalCluster of its own
    assert r.exit_code == BadInput.exit_code, (r.output, r.exception)
    assert [line for line in r.stderr.splitlines() if "error" in line] == [
        f"minstf: error: {tmp_path / 'in' / 'b.png'}: not an image, or a format Pillow cannot read"]
    assert not list((tmp_path / "out").glob("*.json")) and time.perf_counter() - t < 20


def test_eval_workers_without_dask(folder, tmp_path, monkeypatch):
    for module in ("dask", "dask.distributed", "distributed"):
        monkeypatch.setitem(sys.modules, module, None)
    r = run(folder, "--out", tmp_path, "--qualities", "none", "--baselines", "jpeg", "--no-plot", "--workers", "2")
    assert r.exit_code == 1 and r.stderr == "minstf: error: --workers and --scheduler need Dask: " \
                                            "pip install 'minstf[dask]'\n"


def test_progress_bar_length_weighs_codecs_by_cost(folder):  # noqa: F811
    """The bar's length (and so its ETA) counts a minstf image as COST["minstf"] JPEG ones."""
    runs = [("q2", "w")]
    points = {"jpeg": [20, 50], "webp": [], "avif": []}
    n = len(ev.image_paths(folder))
    assert ev.total_tasks(folder, None, runs, ["jpeg"], points) == n * 3
    assert ev.total_steps(folder, None, runs, ["jpeg"], points) == n * (ev.COST["minstf"] + 2 * ev.COST["jpeg"])
    assert ev.COST["minstf"] > ev.COST["avif"] > ev.COST["webp"] > ev.COST["jpeg"]
