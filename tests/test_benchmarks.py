"""The benchmark scripts run end to end (CI's smoke version: one small model, few runs).

This checks that the scripts work and that the builds they time compute onnxruntime's outputs,
not how fast anything is: timings on shared machines do not belong in tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fp32_benchmark_smoke_runs_untuned_and_tuned():
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "fp32_vs_onnxruntime.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    claims = [line for line in proc.stdout.splitlines() if line.startswith("claim:")]
    assert len(claims) == 2 and "untuned" in claims[0] and "tuned, 10 trials" in claims[1], proc.stdout
    for claim in claims:
        difference = float(re.search(r"max relative output difference ([0-9.e+-]+)", claim).group(1))
        assert difference <= 1e-4, claim
    assert "| digits_cnn | 1 |" in proc.stdout


@pytest.mark.parametrize("script", ["fp32_vs_onnxruntime.py", "parallel_chunks.py"])
def test_model_benchmarks_refuse_an_unknown_model_in_one_line(script):
    """A model name that is no file, architecture or light-zoo model ends the benchmark with one
    line naming it and the names it takes, and a non-zero exit (each raised FileNotFoundError's
    traceback from deep in onnx.load before: fp32_vs_onnxruntime.py until session 44,
    parallel_chunks.py, which also took no light-zoo name, until session 45)."""
    extra = ["--threads", "1"] if script == "fp32_vs_onnxruntime.py" else []
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", script), "--models", "squeezenet", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "unknown model 'squeezenet'" in proc.stderr and "light_squeezenet" in proc.stderr, (
        proc.stderr
    )


def _run_smoke(script: str) -> str:
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", script), "--smoke"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_binary_layers_benchmark_smoke():
    out = _run_smoke("binary_layers.py")
    claims = [line for line in out.splitlines() if line.startswith("claim: binary l4")]
    assert len(claims) == 1, out
    row = next(line for line in out.splitlines() if line.startswith("| l4 |"))
    assert float(row.rsplit("|", 2)[-2]) <= 1e-4, row  # slimtvm vs onnxruntime on the binary model


def test_binary_models_benchmark_smoke():
    out = _run_smoke("binary_models.py")
    match = re.search(r"min cosine ([0-9.]+), top-1 agreement (\d+)/(\d+), max relative difference ([0-9.e+-]+)", out)
    assert match, out
    assert float(match.group(1)) >= 0.999 and match.group(2) == match.group(3) and float(match.group(4)) <= 1e-4, out
    assert "| digits BNN vs digits CNN (smoke) | 1 |" in out


def test_sparse_layers_benchmark_smoke():
    out = _run_smoke("sparse_layers.py")
    row = next(line for line in out.splitlines() if line.startswith("l4 "))
    assert float(row.split()[-1]) <= 1e-4, row  # both slimtvm builds vs onnxruntime
    assert "largest relative difference from onnxruntime" in out


def test_sparse_models_benchmark_smoke():
    out = _run_smoke("sparse_models.py")
    assert out.count("x its dense build; max relative difference") == 2, out  # one line per fixture
    assert float(out.rsplit("largest relative difference from onnxruntime: ", 1)[1].split()[0]) <= 1e-4, out


def test_sparse_in_model_benchmark_smoke():
    out = _run_smoke("sparse_in_model.py")
    rows = [line for line in out.splitlines() if "sparse_conv2d" in line]
    assert len(rows) >= 10, out  # every pruned 3×3 conv found among the kernel calls of both builds
    assert float(out.rsplit("outputs within ", 1)[1].split()[0]) <= 1e-4, out


def test_detectors_benchmark_smoke():
    out = _run_smoke("detectors.py")
    row = next(line for line in out.splitlines() if line.startswith("| yolo-like (smoke) | 1 |"))
    assert float(row.rsplit("|", 2)[-2]) <= 1e-4, row  # slimtvm vs onnxruntime on the same model
    assert "claim: yolo-like (smoke) at 1 thread(s), untuned: slimtvm/onnxruntime = " in out


def test_conv_layers_and_profile_scripts_run():
    """Both scripts once broke silently (the conv rule's index changed): run them on small cases."""
    conv = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "conv_layers.py"), "--layers", "l4_6", "--runs", "2"], capture_output=True, text=True, timeout=600
    )
    assert conv.returncode == 0, conv.stderr[-3000:]
    row = next(line for line in conv.stdout.splitlines() if line.startswith("| l4_6 |"))
    assert float(row.split("|")[4]) > 0, row  # slimtvm ms: a number, not an error name
    assert float(row.split("|")[8]) <= 1e-4, row  # the kernel's output against onnxruntime's
    assert "unequal work" in conv.stdout
    profile = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "profile_kernels.py"), "digits_cnn", "--repeat", "2"], capture_output=True, text=True, timeout=600
    )
    assert profile.returncode == 0, profile.stderr[-3000:]
    assert "median of 2 runs per kernel" in profile.stdout, profile.stdout
    scaling = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "profile_kernels.py"), "digits_cnn", "--threads", "1,2", "--repeat", "2", "--min-us", "0"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert scaling.returncode == 0, scaling.stderr[-3000:]
    rows = [line for line in scaling.stdout.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert rows and all(len(row.split("|")) == 7 for row in rows), scaling.stdout  # every call timed at 1 and 2 threads
    assert "claim: digits_cnn 2 vs 1 thread(s)" in scaling.stdout, scaling.stdout
    # the host's own parallel multiply-adds, timed in the same rounds, and every call against them
    assert re.search(r"host: register-resident parallel multiply-adds .* ×\d+\.\d\d at 2", scaling.stdout), scaling.stdout
    assert all(re.search(r"\| \d+\.\d\d( <)? \(\d+\.\d\d\) \|$", row) for row in rows), scaling.stdout


def test_builds_in_turns_take_every_place_equally_often():
    """runtime.bench.turn_order (profile_kernels' rounds, compare_builds, every time_in_turns):
    over as many rounds as there are cases, each case runs once in every place of a round
    (first, right after onnxruntime's turn, included), and every round runs every case once."""
    from slimtvm.runtime.bench import turn_order

    for cases in (1, 2, 3, 4):
        rounds = [turn_order(cases, r) for r in range(cases)]
        assert all(sorted(order) == list(range(cases)) for order in rounds)
        for place in range(cases):
            assert sorted(order[place] for order in rounds) == list(range(cases))
    assert turn_order(3, 0) == [0, 1, 2] and turn_order(3, 4) == [1, 2, 0]


def test_calm_rounds_leave_out_the_rounds_the_host_lost_a_core():
    """profile_kernels.calm_rounds on two thread counts over seven rounds: the two rounds whose
    probe scaled ×1.05 and ×1.5 are left out, the medians are those of the other five, computed here."""
    import statistics

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from profile_kernels import calm_rounds

    probe_1 = [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]
    probe_2 = [1.02, 1.9, 1.03, 1.33, 1.04, 1.01, 1.0]  # ×1.96, ×1.05, ×1.94, ×1.50, ×1.92, ×1.98, ×2.0
    calls_1 = [[100.0, 10.0], [101.0, 11.0], [99.0, 9.0], [102.0, 12.0], [98.0, 10.5], [100.5, 9.5], [97.0, 10.2]]
    calls_2 = [[51.0, 5.0], [95.0, 10.0], [50.0, 5.5], [70.0, 8.0], [52.0, 6.0], [49.0, 5.2], [48.0, 5.1]]

    def profile(calls, probes):
        rounds = {"calls": calls, "run": [sum(c) for c in calls], "probe": probes}
        return {"names": ["a", "b"], "calls": [0.0, 0.0], "run": 0.0, "probe": statistics.median(probes), "rounds": rounds}

    calm, kept, total = calm_rounds({1: profile(calls_1, probe_1), 2: profile(calls_2, probe_2)}, [1, 2])
    assert (kept, total) == (5, 7)
    keep = [0, 2, 4, 5, 6]
    assert calm[2]["calls"] == [statistics.median(calls_2[r][i] for r in keep) for i in range(2)]
    assert calm[1]["calls"] == [statistics.median(calls_1[r][i] for r in keep) for i in range(2)]
    assert calm[2]["run"] == statistics.median(sum(calls_2[r]) for r in keep)
    # a round in which the pool benched a worker is left out too, though its probe scaled: here
    # that leaves 4 of the 5, too few, so every round stays (the profiles come back unchanged)
    benched = {1: profile(calls_1, probe_1), 2: profile(calls_2, probe_2)}
    benched[2]["rounds"]["benches"] = [0, 0, 0, 0, 0, 2, 0]
    same, kept, total = calm_rounds(benched, [1, 2])
    assert (kept, total) == (4, 7) and same[2]["calls"] == [0.0, 0.0]
    # with a sixth calm round, the benched one is left out of the medians
    benched = {1: profile([*calls_1, [96.0, 10.0]], [*probe_1, 2.0]), 2: profile([*calls_2, [47.0, 5.3]], [*probe_2, 1.0])}
    benched[1]["rounds"]["benches"] = [0, 0, 0, 0, 0, 0, 0, 0]
    benched[2]["rounds"]["benches"] = [0, 0, 0, 0, 0, 2, 0, 0]
    calm, kept, _ = calm_rounds(benched, [1, 2])
    keep = [0, 2, 4, 6, 7]
    assert kept == 5 and calm[2]["calls"] == [statistics.median(([*calls_2, [47.0, 5.3]])[r][i] for r in keep) for i in range(2)]
    # fewer calm rounds than MIN_CALM_ROUNDS: every round stays
    same, kept, _ = calm_rounds({1: profile(calls_1[:4], probe_1[:4]), 2: profile(calls_2[:4], [1.9, 1.9, 1.9, 1.02])}, [1, 2])
    assert kept == 1 and same[2]["calls"] == [0.0, 0.0]


def test_layers_vs_onnxruntime_profiles_both_engines_on_token_ids(tmp_path):
    """The per-kernel comparison on a model whose input is int64 token ids (an embedding, a
    matmul and a ReLU): both engines run on the model's own inputs (the script once fed
    onnxruntime floats and failed on such models), and both the product's kernel and
    onnxruntime's MatMul node are timed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((50, 64)).astype(np.float32), "table")
    weight = numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w")
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["m"]), helper.make_node("Relu", ["m"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 128])],
        [table, weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tokens.onnx"
    onnx.save(model, str(path))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "layers_vs_onnxruntime.py"), str(path), "--repeat", "2"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert any("packed_matmul" in row[1] and float(row[3]) > 0 for row in cells), proc.stdout  # slimtvm's kernel, timed
    assert any(row[5] == "MatMul" and float(row[7]) > 0 for row in cells), proc.stdout  # onnxruntime's node, timed
    assert "kernels: slimtvm" in proc.stdout


def test_layers_vs_onnxruntime_sums_onnxruntimes_two_convs_beside_the_fused_kernel():
    """Where slimtvm runs a depthwise conv and the 1×1 conv after it as one kernel, onnxruntime's
    two Conv nodes share its row (times summed), and the rows after stay aligned."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from layers_vs_onnxruntime import aligned_nodes

    ours = [
        ("fused_conv2d_NCHWc", [1, 96, 56, 56], 200.0),
        ("fused_depthwise_projection_add1", [1, 32, 56, 56], 300.0),
        ("fused_conv2d_NCHWc1", [1, 96, 56, 56], 210.0),
    ]
    theirs = [
        ("expand", "Conv", [1, 96, 56, 56], 190.0),
        ("dw", "Conv", [1, 96, 56, 56], 120.0),
        ("project", "Conv", [1, 24, 56, 56], 170.0),
        ("next", "Conv", [1, 96, 56, 56], 195.0),
        ("tail", "Gemm", [1, 1000], 30.0),
    ]
    assert aligned_nodes(ours, theirs) == [theirs[0], ("dw + project", "Conv + Conv", [1, 24, 56, 56], 290.0), theirs[3], theirs[4]]


def test_compare_builds_times_every_build_and_checks_outputs(tmp_path):
    import slimtvm

    model = os.path.join(REPO, "examples", "digits_cnn.onnx")
    builds = [slimtvm.compile(model, str(tmp_path / f"{name}.so"), target=target).library_path for name, target in (("avx2", "x86-64"), ("host", "host"))]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "compare_builds.py"), model, *builds, "--threads", "1", "--runs", "3"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if "ratio to onnxruntime" in line]
    assert len(rows) == 2, proc.stdout
    for row in rows:
        assert float(re.search(r"max relative difference ([0-9.e+-]+)", row).group(1)) <= 1e-4, row
    # --kernels: the same builds kernel by kernel in turns, onnxruntime's whole run in the same rounds
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "benchmarks", "compare_builds.py"),
            model,
            *builds,
            "--kernels",
            "--threads",
            "1,2",
            "--repeat",
            "2",
            "--min-us",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    differences = re.findall(r"max relative difference from onnxruntime ([0-9.e+-]+)", proc.stdout)
    assert len(differences) == 2 and all(float(d) <= 1e-4 for d in differences), proc.stdout
    wholes = [line for line in proc.stdout.splitlines() if "whole run: onnxruntime" in line]
    assert len(wholes) == 2 and all(float(re.search(r"onnxruntime ([0-9.]+) ms", line).group(1)) > 0 for line in wholes), proc.stdout
    cells = [[cell.strip() for cell in line.split("|")[1:-1]] for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    assert cells and all(len(row) == 2 + 4 for row in cells), proc.stdout  # 2 builds × 2 thread counts
    # the VM's own builtins (null_value, reshape) can round to 0 µs; the compiled kernels cannot
    kernels = [row for row in cells if not row[1].startswith("vm.builtin.")]
    assert kernels and all(float(row[2]) > 0 and float(row[4].split()[0]) > 0 for row in kernels), proc.stdout


def test_cpu_limits_are_measured_on_this_host():
    """The limits the benchmarks print come from kernels run here: both positive, binary above fp32
    (8 binary MACs per byte lane against one fp32 MAC per 4-byte lane), and the parallel
    multiply-adds at 1 and 2 threads and the hand-off reads at 2 (no bound on their ratios: that is
    what the host measures)."""
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "cpu_limits.py")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fp32, binary = (float(v) for v in re.search(r"fp32 (\d+) G MAC/s .* binary (\d+) G MAC/s", proc.stdout).groups())
    assert 0 < fp32 < binary, proc.stdout
    assert proc.stdout.startswith("CPU: ")
    # each thread count's parallel multiply-adds (checked against numpy inside) and fork + join
    parallel = re.search(
        r"parallel multiply-adds .*: 1 thread (\d+) G MAC/s \(x1.00, .*\), fork\+join ([0-9.]+) us, 2 threads (\d+) G MAC/s \(x([0-9.]+),", proc.stdout
    )
    assert parallel and all(float(value) > 0 for value in parallel.groups()), proc.stdout
    # a parallel read of what the same thread / another thread wrote (its sums checked against numpy inside)
    handoff = re.search(r"hand-off at 2 threads .* its own part ([0-9.]+) us, another thread's ([0-9.]+) us", proc.stdout)
    assert handoff and all(float(value) > 0 for value in handoff.groups()), proc.stdout


def test_low_rank_benchmark_smoke():
    out = _run_smoke("low_rank.py")
    row = next(line for line in out.splitlines() if line.startswith("l4 "))
    assert row.split()[1] == "128×128", row  # rank 0.25 of 512 × 512
    assert float(row.split()[-1]) <= 1e-4, row  # the chain's artifact vs onnxruntime


def test_lossy_accuracy_benchmark_smoke():
    out = _run_smoke("lossy_accuracy.py")  # exits non-zero if an artifact's prediction differs from onnxruntime's
    assert "low-rank rank=0.5 + calibration" in out and "prune 0.7 + calibration" in out, out
    float_row = next(line for line in out.splitlines() if line.startswith("float model"))
    assert float_row.split()[2].endswith("%"), float_row


def test_xnor_resnet18_benchmark_smoke():
    out = _run_smoke("xnor_resnet18.py")  # exits non-zero if the binary artifact differs from onnxruntime
    assert "19 layers binarized, 19 run the binary conv kernels" in out, out


def test_scaling_benchmark_smoke(tmp_path):
    plot = tmp_path / "scaling.png"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "scaling.py"), "--smoke", "--plot", str(plot)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for label in ("digits_cnn", "digits_bnn vs digits_cnn"):
        for batch in (1, 2):
            for threads in (1, 2):
                assert f"| {label} | {batch} | {threads} |" in out, out
    assert "claim: digits_bnn vs digits_cnn, batch 2, 2 thread(s): slimtvm binary " in out
    assert plot.stat().st_size > 10_000


def test_busy_core_benchmark_smoke():
    """The digits CNN quiet and with a process spinning on one core (the script starts and ends
    it): both pools and onnxruntime timed, every slimtvm variant's output checked."""
    out = _run_smoke("busy_core.py")
    for condition in ("quiet", "busy"):
        assert re.search(rf"\| digits_cnn \| {condition} \|( [0-9.]+( \(×[0-9.]+\))? \|){{5}} \d+ \|", out), out
        claim = next(line for line in out.splitlines() if line.startswith(f"claim: digits_cnn, {condition}, 2 threads"))
        assert float(claim.rsplit("max relative difference ", 1)[1].rstrip(")")) <= 1e-4, claim


def test_classifier_scaling_benchmark_smoke():
    """One small classifier, cold and warm, both engines at 1 and 2 threads (the script exits
    non-zero when slimtvm's output differs from onnxruntime's)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "classifier_scaling.py"), "--shapes", "64x100", "--rounds", "2"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"\| 64 → 100 \| 0\.0 MB \| cold \|( [0-9.]+ \|){6}", proc.stdout), proc.stdout
    assert "| 64 → 100 | 0.0 MB | warm |" in proc.stdout, proc.stdout


def test_many_core_benchmark_prepares_here_and_measures_with_tvms_runtime_only(tmp_path):
    """The many-core route end to end on the digits models: ``prepare`` (this Python's TVM packed
    without its compiler library, for the portable AVX2 target), then ``measure`` from the packed
    folder alone, its timing processes importing only that runtime; the script stops if an output
    differs from onnxruntime or from this machine's run of the same artifact. Also: two rounds
    (the median round and the range), a model subset, ``report`` of the saved run, both engines
    timed alone, and the machine-limit kernels (compute, read bandwidth, fork and join) per thread
    count, each checked against numpy before it is timed."""
    kit = tmp_path / "kit"
    prepare = [sys.executable, os.path.join(REPO, "benchmarks", "many_core.py"), "prepare", str(kit)]
    proc = subprocess.run(
        prepare + ["--target", "x86-64", "--models", "digits_cnn,digits_bnn", "--runtime-from-here", "--limits-memory-mib", "64", "--limits-cache-mib", "8"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    measure = [sys.executable, str(kit / "benchmarks" / "many_core.py"), "measure", str(kit), "--threads", "1,2", "--runs", "3", "--profile-repeat", "1"]
    proc = subprocess.run(measure + ["--rounds", "2", "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    claims = [line for line in proc.stdout.splitlines() if line.startswith("claim:")]
    assert len(claims) == 4, proc.stdout
    assert all("0.0e+00 to the preparing machine's run" in claim and "; alone " in claim for claim in claims), claims
    table = [line for line in proc.stdout.splitlines() if line.startswith("| digits_")]
    assert len(table) == 4 and "| digits_bnn vs float digits_cnn | 2 |" in proc.stdout
    assert all(re.search(r"\| \d+\.\d\d \(\d+\.\d\d–\d+\.\d\d\) \|", line) for line in table), table  # the median round, the rounds' range
    assert "serial fraction" in proc.stdout and proc.stdout.count("round 2: ") == 4
    limits = [line for line in proc.stdout.splitlines() if re.match(r"\| [12] \| \d+ \(", line)]
    assert len(limits) == 2 and limits[0].startswith("| 1 | ") and " (1.00) | " in limits[0], proc.stdout[-3000:]  # the machine's limits per thread count
    assert limits[0].endswith("| – |") and re.search(r"\| \d+\.\d / \d+\.\d \|$", limits[1]), limits  # the hand-off at 2 threads only
    again = subprocess.run(
        [sys.executable, os.path.join(REPO, "benchmarks", "many_core.py"), "report", str(tmp_path / "r.json")], capture_output=True, text=True
    )
    assert again.returncode == 0 and [line for line in again.stdout.splitlines() if line.startswith("| digits_")] == table
    one = subprocess.run(measure + ["--models", "digits_bnn"], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and "| digits_cnn |" not in one.stdout and "| digits_bnn vs float digits_cnn | 2 |" in one.stdout, one.stdout[-2000:]
    unknown = subprocess.run(measure + ["--models", "resnet1000"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode != 0 and "no model resnet1000" in unknown.stderr and "Traceback" not in unknown.stderr


def test_periodic_weights_repeat_every_output_channel_group_and_still_run(tmp_path):
    """The many-core benchmark's compressible weights: each initializer with more than 16 rows is
    its first 16 rows repeated, and onnxruntime still runs the model to finite outputs."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from architectures import ARCHITECTURES
    from many_core import PERIOD, periodic_weights

    from slimtvm.runtime.bench import onnxruntime_session

    model = periodic_weights(ARCHITECTURES["mobilenet_v2"](seed=0))
    weights = [numpy_helper.to_array(init) for init in model.graph.initializer]
    repeated = [w for w in weights if w.ndim and w.shape[0] > PERIOD and w.shape[0] % PERIOD == 0]
    assert len(repeated) > 50
    for w in repeated:
        groups = w.reshape((w.shape[0] // PERIOD, PERIOD) + w.shape[1:])
        assert (groups == groups[:1]).all()
    onnx.save(model, str(tmp_path / "periodic.onnx"))
    out = onnxruntime_session(str(tmp_path / "periodic.onnx"), 1).run(None, {"input": np.ones((1, 3, 224, 224), np.float32)})[0]
    assert np.isfinite(out).all() and np.ptp(out) > 0
