"""Many images (minstf/batch.py): `minstf encode|decode IN... -o DIR/`, in this process and on a
real Dask LocalCluster of 2 worker processes. Small synthetic weights and 64x64 images.

Each rule, and the test that holds it:
    outputs keep relative names, bytes equal to in-process coding ..... test_batch_in_process, test_on_dask
    an existing output is skipped (a rerun resumes), --force redoes .. test_rerun_resumes
    a bad file is one line and a failed record; the others are coded . test_bad_files_and_exit_codes, test_on_dask
    the exit code is the first failure's in input order .............. test_bad_files_and_exit_codes
    no output is an input, nor another job's output ................... test_no_output_is_an_input
    a worker killed mid-batch loses nothing ........................... test_killed_worker_loses_nothing
    a task run again writes the same bytes or fails, never clobbers ... test_a_task_run_twice
    each worker loads the model once .................................. test_on_dask
    --workers without Dask, and batch usage errors .................... test_usage_errors
"""
import json
import os
import signal
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from threadpoolctl import threadpool_limits

from minstf import batch
from minstf.tooling import cluster
from minstf.cli import main
from minstf.codec import decode_image, encode_image
from minstf.errors import BadInput, CorruptFile, OutputExists
from minstf.zoo import load_model

from test_codec import sample_image, small_weights  # noqa: F401 (a fixture)

SIZES = [(64, 64), (48, 64), (64, 40), (32, 64), (64, 64)]
NAMES = ["a/b.png", "a/c.png", "d.png", "e/f/g.png", "h.png"]


@pytest.fixture(scope="module", autouse=True)
def env(small_weights):  # noqa: F811 (module scope: the cluster's workers inherit it when they start)
    """The small weights as the shipped ones, and BLAS here on as many threads as each of 2 local
    workers has: decoded pixels (float32 synthesis) depend on the BLAS thread count, so only then
    do this process and the workers run one code path, and compare exactly."""
    with pytest.MonkeyPatch.context() as mp, threadpool_limits(cluster.worker_threads(2)):
        mp.setenv("MINSTF_WEIGHTS_DIR", str(small_weights))
        yield small_weights


@pytest.fixture(scope="module")
def photos(tmp_path_factory, env):
    """A folder of images in subfolders, and the bytes of each one's .mstf and decoded PNG, coded
    in this process as `minstf encode` would (q2, portable)."""
    root = tmp_path_factory.mktemp("photos")
    model = load_model(env / "stf-small-q2.safetensors")
    expected = {}
    for i, (name, (h, w)) in enumerate(zip(NAMES, SIZES)):
        image = sample_image(h, w, seed=i)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / name)
        data, _ = encode_image(model, image)
        expected[name] = (data, decode_image(model, data)[0])
    return root, expected


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def manifest(path):
    return [json.loads(line) for line in open(path)]


def assert_outputs(out, expected, suffix=".mstf"):
    for name, (data, image) in expected.items():
        got = out / name.replace(".png", suffix)
        if suffix == ".mstf":
            assert got.read_bytes() == data, name
        else:
            np.testing.assert_array_equal(np.array(Image.open(got)), image, err_msg=name)


# --- in this process ----------------------------------------------------------------------

def test_batch_in_process(tmp_path, photos):
    root, expected = photos
    r = run("encode", root, "-o", f"{tmp_path / 'out'}/")
    assert r.exit_code == 0, r.output
    assert_outputs(tmp_path / "out", expected)
    lines = r.stderr.splitlines()                                 # not a terminal: a line a file, a summary
    assert len(lines) == len(NAMES) + 1 and lines[0].startswith(f"minstf: [1/5] {root / 'a/b.png'} -> ")
    assert lines[-1].startswith("minstf: 5 files: 5 ok, 0 skipped, 0 failed, ")
    records = manifest(tmp_path / "out" / "manifest.jsonl")
    assert [r["input"] for r in records] == [str(root / n) for n in NAMES]
    for rec, name in zip(records, NAMES):
        assert rec["status"] == "ok" and rec["error"] is None and rec["output"] == str(tmp_path / "out" / name[:-4]) + ".mstf"
        assert rec["bytes"] == len(expected[name][0]) and rec["bpp"] == 8 * rec["bytes"] / (rec["width"] * rec["height"])
        assert rec["seconds"] > 0

    r = run("decode", tmp_path / "out", "-o", f"{tmp_path / 'png'}/", "--quiet", "--manifest", tmp_path / "m.jsonl")
    assert r.exit_code == 0 and r.stderr == ""
    assert_outputs(tmp_path / "png", expected, ".png")
    assert [r["status"] for r in manifest(tmp_path / "m.jsonl")] == ["ok"] * 5
    assert not (tmp_path / "png" / "manifest.jsonl").exists()

    one = run("encode", root / "d.png", "-o", f"{tmp_path / 'one'}/")   # one file into a directory
    assert one.exit_code == 0 and (tmp_path / "one" / "d.mstf").read_bytes() == expected["d.png"][0]


def test_rerun_resumes(tmp_path, photos):
    root, expected = photos
    out = tmp_path / "out"
    assert run("encode", root / "a", root / "d.png", "-o", f"{out}/").exit_code == 0
    done = {p: p.stat().st_mtime_ns for p in out.rglob("*.mstf")}
    assert sorted(p.relative_to(out).as_posix() for p in done) == ["b.mstf", "c.mstf", "d.mstf"]
    (out / "c.mstf").unlink()                                     # as if the first run had stopped there
    r = run("encode", root / "a", root / "d.png", "-o", out)
    assert r.exit_code == 0 and "skipped (it exists; --force codes it again)" in r.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in done.items() if p.name != "c.mstf")   # untouched
    records = {r["input"]: r for r in manifest(out / "manifest.jsonl")[3:]}   # appended: 3 lines a run,
    assert [records[str(root / n)]["status"] for n in ("a/b.png", "a/c.png", "d.png")] == ["skipped", "ok", "skipped"]
    skipped = records[str(root / "a/b.png")]                      # in the order they finish
    assert skipped["bytes"] == len(expected["a/b.png"][0]) and skipped["bpp"] > 0
    assert (out / "c.mstf").read_bytes() == expected["a/c.png"][0]
    r = run("encode", root / "a", root / "d.png", "-o", out, "--force")
    assert r.exit_code == 0 and [r["status"] for r in manifest(out / "manifest.jsonl")[6:]] == ["ok"] * 3


def test_bad_files_and_exit_codes(tmp_path, photos):
    root, expected = photos
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("a.png", "c.png"):
        (mixed / name).write_bytes((root / "d.png").read_bytes())
    (mixed / "b.png").write_bytes(b"not an image at all")
    r = run("encode", mixed, "-o", f"{tmp_path / 'out'}/")
    assert r.exit_code == BadInput.exit_code
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert errors == [f"minstf: error: {mixed / 'b.png'}: not an image, or a format Pillow cannot read"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mstf", "c.mstf", "manifest.jsonl"]
    failed = manifest(tmp_path / "out" / "manifest.jsonl")[1]
    assert failed["status"] == "failed" and failed["error"]["exit_code"] == BadInput.exit_code

    coded = tmp_path / "coded"                                    # decode: a truncated file (4) before a bad one (3)
    coded.mkdir()
    data = expected["d.png"][0]
    (coded / "1.mstf").write_bytes(data[:-5])
    (coded / "2.mstf").write_bytes(data)
    (coded / "3.mstf").write_bytes(data)
    (tmp_path / "png").mkdir()
    (tmp_path / "png" / "3.png").mkdir()                          # an output that is a directory: exit code 1
    r = run("decode", coded, "-o", tmp_path / "png")
    assert r.exit_code == CorruptFile.exit_code and r.stderr.count("minstf: error: ") == 2
    assert [r["status"] for r in manifest(tmp_path / "png" / "manifest.jsonl")] == ["failed", "ok", "failed"]
    assert batch.exit_code([{"status": "ok"}, {"status": "failed", "error": {"exit_code": 5}},
                            {"status": "failed", "error": {"exit_code": 3}}]) == 5


def test_a_task_run_twice(tmp_path, photos, env):
    """A task run again after its worker died, having written its output: the same bytes are ok;
    other bytes in the way are a failure (exit code 8), never overwritten without --force."""
    root, expected = photos
    job = batch.Job(0, "encode", str(root / "d.png"), str(tmp_path / "d.mstf"))
    s = batch.Settings(str(env / "stf-small-q2.safetensors"))
    assert [batch.code_file(job, s)["status"] for _ in range(2)] == ["ok", "ok"]
    assert (tmp_path / "d.mstf").read_bytes() == expected["d.png"][0]
    (tmp_path / "d.mstf").write_bytes(b"other")
    rec = batch.code_file(job, s)
    assert rec["status"] == "failed" and rec["error"]["exit_code"] == OutputExists.exit_code
    assert (tmp_path / "d.mstf").read_bytes() == b"other"


def test_no_output_is_an_input(tmp_path, photos):
    root, _ = photos
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.png").write_bytes((root / "d.png").read_bytes())
    (src / "x.jpg").write_bytes((root / "h.png").read_bytes())   # the same output name as x.png
    out = tmp_path / "out"
    out.mkdir()
    os.link(src / "x.png", out / "x.mstf")                        # an output that is an input (hard link)
    before = (src / "x.png").read_bytes()
    r = run("encode", src, "-o", out, "--force")
    assert r.exit_code == BadInput.exit_code and (src / "x.png").read_bytes() == before
    assert [rec["error"]["message"] for rec in manifest(out / "manifest.jsonl")] == [
        f"{out / 'x.mstf'} is an input: refusing to overwrite it (even with --force)",     # x.jpg, first
        f"{src / 'x.png'}: its output {out / 'x.mstf'} is also the output of {src / 'x.jpg'}"]
    r = run("encode", src / "x.png", root / "d.png", "-o", out, "--manifest", root / "d.png")
    assert r.exit_code == BadInput.exit_code and "is an input: refusing to write the manifest" in r.stderr


def test_usage_errors(tmp_path, photos, monkeypatch):
    root, _ = photos
    for args in (["encode", root / "d.png", root / "h.png", "-o", tmp_path / "x.mstf"],   # several into a file
                 ["encode", root, "-o", "-"], ["encode", "-", root / "d.png", "-o", f"{tmp_path}/"],
                 ["encode", root / "d.png", "-o", tmp_path / "x.mstf", "--workers", "2"],  # a batch option, one file
                 ["encode", root, "-o", tmp_path, "--workers", "2", "--scheduler", "tcp://x:1"]):
        r = run(*args)
        assert r.exit_code == 2 and "Traceback" not in r.output, (args, r.output)
    for module in ("dask", "dask.distributed", "distributed"):   # Dask not installed
        monkeypatch.setitem(sys.modules, module, None)
    r = run("encode", root, "-o", tmp_path, "--workers", "2")
    assert r.exit_code == 1 and r.stderr == "minstf: error: --workers and --scheduler need Dask: " \
                                            "pip install 'minstf[dask]'\n"


# --- on a Dask cluster of 2 worker processes -----------------------------------------------

@pytest.fixture(scope="module")
def client(env):
    pytest.importorskip("dask.distributed", reason="the Dask tests need minstf[dask] (dask[distributed])")
    with cluster.client(workers=2) as client:
        yield client


def loads(client):
    """How many models each worker process has loaded."""
    return sorted(client.run(lambda: len(__import__("minstf.batch").batch.LOADS)).values())


def test_on_dask(tmp_path, photos, client, env):
    root, expected = photos
    s = batch.Settings(str(env / "stf-small-q2.safetensors"))
    out = tmp_path / "out"
    jobs = batch.plan("encode", [root], out)
    records = batch.run_batch(jobs, s, tmp_path / "m.jsonl", client)
    assert [r["status"] for r in records] == ["ok"] * 5
    assert_outputs(out, expected)                                 # byte-identical to in-process coding
    assert all(n <= 1 for n in loads(client))                     # once a worker, not once a task
    assert sorted(r["input"] for r in manifest(tmp_path / "m.jsonl")) == sorted(j.src for j in jobs)

    decoded = batch.run_batch(batch.plan("decode", [out], tmp_path / "png"), batch.Settings(), tmp_path / "d.jsonl",
                              client)                             # weights found from the files, on the workers
    assert [r["status"] for r in decoded] == ["ok"] * 5
    assert_outputs(tmp_path / "png", expected, ".png")
    assert all(n <= 1 for n in loads(client))                     # the same q2 weights, found from the files

    (tmp_path / "bad").mkdir()                                    # a bad file: failed once, not retried
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    jobs = batch.plan("encode", [root / "d.png", tmp_path / "bad" / "x.png"], tmp_path / "out2")
    records = batch.run_batch(jobs, s, tmp_path / "m2.jsonl", client)
    assert [r["status"] for r in records] == ["ok", "failed"] and records[1]["error"]["exit_code"] == 3
    assert len(manifest(tmp_path / "m2.jsonl")) == 2
    again = batch.run_batch(jobs, s, tmp_path / "m2.jsonl", client)  # a rerun: the good one skipped
    assert [r["status"] for r in again] == ["skipped", "failed"]


def test_killed_worker_loses_nothing(tmp_path, photos, client, env):
    root, expected = photos
    s = batch.Settings(str(env / "stf-small-q2.safetensors"))
    jobs = []                                                     # 10 files: the folder twice, into out1/, out2/
    for copy in ("out1", "out2"):
        jobs += [batch.Job(len(jobs) + j.index, j.kind, j.src, j.out) for j in batch.plan("encode", [root], tmp_path / copy)]
    pids = client.run(os.getpid)
    killed = []

    def kill_one(job, rec):                                       # at the first result: kill a busy worker
        if killed:
            return
        busy = [(w, keys) for w, keys in client.processing().items() if keys]
        assert busy, "no worker was busy: the test needs slower tasks"
        killed.append((pids[busy[0][0]], len(busy[0][1])))        # (pid, tasks it had): to run again
        os.kill(pids[busy[0][0]], signal.SIGKILL)

    t = time.perf_counter()
    records = batch.run_batch(jobs, s, tmp_path / "m.jsonl", client, kill_one)
    assert killed and killed[0][0] not in client.run(os.getpid).values() and killed[0][1] >= 1
    assert [r["status"] for r in records] == ["ok"] * 10, records
    assert_outputs(tmp_path / "out1", expected)
    assert_outputs(tmp_path / "out2", expected)
    lines = manifest(tmp_path / "m.jsonl")
    assert sorted(r["input"] for r in lines) == sorted(j.src for j in jobs)   # one line per input
    assert not [p for p in tmp_path.rglob(".mstf-*")], "a temporary file was left"
    assert time.perf_counter() - t < 60


def test_cli_workers(tmp_path, photos, client):
    root, expected = photos
    r = run("encode", root, "-o", f"{tmp_path}/", "--workers", "2", "-v")
    assert r.exit_code == 0, r.output
    assert r.stderr.startswith("minstf: dask: 2 workers (tcp://")
    assert_outputs(tmp_path, expected)
