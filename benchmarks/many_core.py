"""Threads 1..N on a many-core x86 machine that has only TVM's runtime: build here, time there.

Step 1, here (full apache-tvm, network for pip):

    .venv/bin/python benchmarks/many_core.py prepare DIR [--target x86-64-avx512-vpopcnt]
        [--models light_resnet50,resnet18,mobilenet_v2,birealnet18] [--bireal-onnx PATH]

compiles every model for ``--target`` (``NAME:direct``: an fp32 model also built with
``--conv-algorithm direct``, as ``NAME_direct``) and writes DIR: TVM's runtime for CPython 3.12 or `--python-version` (apache-tvm
and apache-tvm-ffi wheels without the compiler library, ~9 MB), slimtvm's sources and these
benchmark scripts, the artifacts and ONNX models (xz), and one input per model with the output
this machine computed from the same artifact (where the target runs here).

Step 2, on the many-core machine (Python 3.12 with numpy, onnx and onnxruntime; no TVM, no
network):

    python3 DIR/benchmarks/many_core.py measure DIR [--threads 1,2,4,8,16] [--runs 40] [--json OUT]
        [--rounds R] [--models light_resnet50,resnet18]

one process per thread count (``TVM_NUM_THREADS`` set before TVM loads, onnxruntime with the
same ``intra_op_num_threads``): each model's artifact and onnxruntime take turns on the same
numpy input (median of ``--runs`` after warm-up, numpy in and out on both sides), then the
artifact's kernels are profiled (VM instrument, median per call). Every output is checked before
anything is timed, or the run stops: against onnxruntime on the same ONNX model (fp32 ≤ 1e-4
relative; the binary network's cosine ≥ 0.999, as benchmarks/binary_models.py) and against the
output the preparing machine computed from the same artifact (≤ 1e-4 relative). Prints a table
(ms, slimtvm/onnxruntime, each engine's speed-up over its 1-thread time), the kernels of ≥ 50 µs
that scale least, the serial fraction per model (Amdahl, from whole runs) and ``claim:`` lines.
The table also shows slimtvm *alone*: its whole-run median while being profiled, with no
onnxruntime runs in between (on the 16-core Xeon of session 33 light ResNet-50 ran 5.9 ms alone
at 8 threads and 9.7 ms in turns). ``--rounds R`` measures every thread count R times, round after
round, and reports the round with the median ratio and the range of the ratios (a shared machine
drifts). ``report OUT.json`` prints the table of a saved run again. Each thread count's process
first measures the machine itself with benchmarks/cpu_limits.py's kernels, built by ``prepare``
(``--no-limits`` leaves them out): register-resident multiply-adds in 256 parallel chunks (do 16
threads compute 16 times as much, or do two share a core?), read bandwidth from memory and from
the L3, and the fork and join of a near-empty parallel loop.

The fp32 models' weights repeat every 16 output channels (``periodic_weights``): the artifacts
must travel (≤ 64 MiB in all here) and random weights do not compress (a light ResNet-50 library
is 133 MB). Dense fp32 kernels do the same work whatever the weights' values, so the times hold
for trained weights; both engines run the same model, and the outputs are checked as above.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
sys.path.insert(0, os.path.join(ROOT, "src"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, HERE)

TVM_WHEELS = ("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1")
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
POOL_VARIABLES = ("SLIMTVM_THREAD_POOL", "TVM_BIND_THREADS", "TVM_THREAD_POOL_SPIN_COUNT")
RUNTIME_ONLY_DROPS = ("tvm/lib/libtvm_compiler.so", "tvm/lib/libtvm_runtime_cuda.so")
CARRIED_TESTS_HELPERS = ("light_zoo.py", "onnx_builders.py")
DEFAULT_MODELS = "light_resnet50,resnet18,mobilenet_v2,birealnet18"
SMOKE_MODELS = {"digits_cnn": ("fp32", "digits_cnn"), "digits_bnn": ("binary", "digits_cnn")}  # label: (kind, reference)
PERIOD = 16  # output channels after which the fp32 models' weights repeat
# /proc/cpuinfo flags each target's code needs (a library built for more faults on fewer)
TARGET_FLAGS = {
    "x86-64": ("avx2", "fma"),
    "x86-64-avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq"),
    "x86-64-avx512-vpopcnt": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bitalg", "avx512_vpopcntdq"),
}
FP32_AGREEMENT = 1e-4
BINARY_COSINE = 0.999
PROFILE_MIN_US = 50.0
LIMITS_LIBRARY = "limits.so"  # benchmarks/cpu_limits.py's machine-limit kernels, built by prepare
# Dropped runs before each engine's block alone: session 33's Xeon ran light ResNet-50 at 8
# threads in 9.7 ms timed in turns (blocks of 5 after a 0.2 s pause and 20 ms of dropped runs)
# and in 5.9 ms in the profiling phase right after, which runs it continuously.
ALONE_WARM_SECONDS = 0.5


def periodic_weights(model, period: int = PERIOD):
    """A copy of the ONNX model whose initializers with more than ``period`` rows (a multiple of
    it) repeat their first ``period`` rows: every layer's output channels come in identical groups,
    and its biases and batch-norm parameters with them, so the compiled weights compress."""
    import onnx
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for index, initializer in enumerate(copy.graph.initializer):
        array = numpy_helper.to_array(initializer)
        if array.dtype != np.float32 or array.ndim == 0 or array.shape[0] <= period or array.shape[0] % period:
            continue
        repeated = np.tile(array[:period], (array.shape[0] // period,) + (1,) * (array.ndim - 1))
        copy.graph.initializer[index].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(repeated), initializer.name))
    return copy


def source_models(names: list, workdir: str, bireal_onnx: str | None) -> list:
    """[(label, ONNX path slimtvm compiles, kind, recipe, reference label, reference recipe,
    compile options)]: the model onnxruntime times against it is the reference (itself for fp32
    models). A recipe rebuilds that ONNX file from seeds (:func:`build_onnx`), so that the
    many-core machine makes its own copy instead of receiving it; None: the file travels. An fp32
    name with ``:direct`` (``resnet18:direct``) is that model built with ``--conv-algorithm
    direct`` under the label ``resnet18_direct``: which kernel a layer should take at many threads."""
    import onnx
    from architectures import ARCHITECTURES

    pairs = []
    for name in names:
        name, _, variant = name.partition(":")
        if variant:
            if variant != "direct" or not (name in ARCHITECTURES or name.startswith("light_")):
                raise SystemExit(f"{name}:{variant}: only fp32 models take a variant, and the one variant is 'direct'")
            label = f"{name}_direct"
            recipe = {"architecture": name} if name in ARCHITECTURES else {"light_zoo": name}
            path = os.path.join(workdir, f"{label}.onnx")
            build_onnx(recipe, path)
            pairs.append((label, path, "fp32", recipe, label, recipe, {"conv_algorithm": "direct"}))
            continue
        path = os.path.join(workdir, f"{name}.onnx")
        if name in ARCHITECTURES or name.startswith("light_"):
            recipe = {"architecture": name} if name in ARCHITECTURES else {"light_zoo": name}
            build_onnx(recipe, path)
            pairs.append((name, path, "fp32", recipe, name, recipe, {}))
        elif name == "birealnet18":
            if bireal_onnx is None:
                from birealnet18 import export  # needs torch

                bireal_onnx = export(os.path.join(workdir, "birealnet18-export.onnx"))
            onnx.save(periodic_weights(onnx.load(bireal_onnx)), path)
            pairs.append((name, path, "binary", None, "resnet18", {"architecture": "resnet18"}, {}))
        elif name in SMOKE_MODELS:  # the bundled digits models (small: they travel)
            shutil.copy(os.path.join(ROOT, "examples", f"{name}.onnx"), path)
            kind, reference = SMOKE_MODELS[name]
            if reference != name:
                shutil.copy(os.path.join(ROOT, "examples", f"{reference}.onnx"), os.path.join(workdir, f"{reference}.onnx"))
            pairs.append((name, path, kind, None, reference, None, {}))
        else:
            raise SystemExit(
                f"unknown model {name!r}: resnet18, mobilenet_v2, light_* (the onnx package's light zoo), birealnet18, digits_cnn or digits_bnn (fp32 ones also NAME:direct)"
            )
    return pairs


def build_onnx(recipe: dict, path: str) -> None:
    """Write the fp32 model a recipe names, seed 0, with :func:`periodic_weights`: one of
    benchmarks/architectures.py (``architecture``) or of the onnx package's light zoo with random
    weights (``light_zoo``). numpy only; the outputs checks catch a numpy whose streams differ."""
    import onnx

    if "architecture" in recipe:
        from architectures import ARCHITECTURES

        model = ARCHITECTURES[recipe["architecture"]](seed=0)
    else:
        from light_zoo import LIGHT, with_logits_output, with_random_weights

        # the logits too: the final Softmax of random weights saturates, and would hide a difference
        model, _ = with_logits_output(with_random_weights(onnx.load(os.path.join(LIGHT, f"{recipe['light_zoo']}.onnx")), seed=0))
    onnx.save(periodic_weights(model), path)


def weights_digest(path: str) -> str:
    """sha256 of an ONNX file's initializers' values, in order (not of its bytes: the onnx
    package's version changes those)."""
    import hashlib

    import onnx
    from onnx import numpy_helper

    digest = hashlib.sha256()
    for initializer in onnx.load(path).graph.initializer:
        digest.update(np.ascontiguousarray(numpy_helper.to_array(initializer)).tobytes())
    return digest.hexdigest()


def runtime_bundle(destination: str, python_version: str) -> None:
    """Write TVM's runtime for CPython ``python_version`` (both wheels unpacked, the compiler
    library left out) as a .tgz."""
    with tempfile.TemporaryDirectory() as work:
        platforms = [arg for platform in WHEEL_PLATFORMS for arg in ("--platform", platform)]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
            + platforms
            + ["-d", work, *TVM_WHEELS],
            check=True,
        )
        site = os.path.join(work, "site")
        for wheel in sorted(f for f in os.listdir(work) if f.endswith(".whl")):
            shutil.unpack_archive(os.path.join(work, wheel), site, format="zip")
        for relative in RUNTIME_ONLY_DROPS:
            if os.path.exists(os.path.join(site, relative)):
                os.remove(os.path.join(site, relative))
        with tarfile.open(destination, "w:gz") as archive:
            archive.add(site, arcname=".", filter=lambda info: None if "__pycache__" in info.name else info)


def installed_runtime_bundle(destination: str) -> None:
    """Write this Python's installed tvm and tvm_ffi packages, the compiler library left out, as
    a .tgz: TVM's runtime for a machine with this same Python (the smoke test's runtime-only run)."""
    import tvm
    import tvm_ffi

    with tarfile.open(destination, "w:gz") as archive:
        for package in (tvm, tvm_ffi):
            folder = os.path.dirname(package.__file__)
            name = os.path.basename(folder)

            def keep(info, name=name):
                relative = os.path.relpath(info.name, ".")
                dropped = any(relative == drop for drop in RUNTIME_ONLY_DROPS) or "__pycache__" in info.name
                return None if dropped else info

            archive.add(folder, arcname=name, filter=keep)


def prepare(args) -> int:
    import onnx

    import slimtvm

    os.makedirs(args.dir, exist_ok=True)
    for part in ("src", "benchmarks", "tests", "models"):
        shutil.rmtree(os.path.join(args.dir, part), ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "src", "slimtvm"), os.path.join(args.dir, "src", "slimtvm"), ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(HERE, os.path.join(args.dir, "benchmarks"), ignore=shutil.ignore_patterns("__pycache__", ".tuning", "*.png"))
    os.makedirs(os.path.join(args.dir, "tests"))
    for helper in CARRIED_TESTS_HELPERS:
        shutil.copy(os.path.join(ROOT, "tests", helper), os.path.join(args.dir, "tests", helper))
    # the runtime bundle is kept between preparations (a 100 MB download) unless made for another Python
    bundle, made_for = os.path.join(args.dir, "tvmrt.tgz"), os.path.join(args.dir, "tvmrt.python")
    wanted = "this Python" if args.runtime_from_here else args.python_version
    kept_for = None
    if os.path.exists(bundle) and os.path.exists(made_for):
        with open(made_for) as file:
            kept_for = file.read()
    if kept_for != wanted:
        if args.runtime_from_here:
            installed_runtime_bundle(bundle)
        else:
            runtime_bundle(bundle, args.python_version)
        with open(made_for, "w") as file:
            file.write(wanted)
        shutil.rmtree(os.path.join(args.dir, "site"), ignore_errors=True)  # unpacked from the old bundle
    runs_here = _target_runs_here(args.target)
    manifest = {"target": args.target, "models": []}
    with tempfile.TemporaryDirectory() as workdir:
        staged = os.path.join(workdir, "models")
        os.makedirs(staged)
        for label, path, kind, recipe, reference, reference_recipe, options in source_models(args.models.split(","), staged, args.bireal_onnx):
            library = os.path.join(staged, f"{label}.so")
            artifact = slimtvm.compile(path, library, target=args.target, **options)
            shape = [int(d.dim_value) for d in onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim]
            x = np.random.default_rng(len(manifest["models"])).standard_normal(shape).astype(np.float32)
            entry = {"label": label, "kind": kind, "reference": reference, "input_shape": shape, "recipe": recipe, "reference_recipe": reference_recipe}
            if runs_here:
                model = artifact.load()
                entry["expected_from"] = _cpu_name()
                np.savez(os.path.join(staged, f"{label}.expected.npz"), **model.run({model.input_names[0]: x}))
            np.save(os.path.join(staged, f"{label}.input.npy"), x)
            manifest["models"].append(entry)
            if recipe is not None:
                entry["weights_sha256"] = weights_digest(path)
                os.remove(path)  # rebuilt there from the recipe
            print(f"{label}: compiled for {args.target} ({os.path.getsize(library) / 1e6:.1f} MB)", flush=True)
        if not args.no_limits:
            from cpu_limits import build_limits_library

            manifest["limits"] = build_limits_library(args.target, os.path.join(staged, LIMITS_LIBRARY), args.limits_memory_mib, args.limits_cache_mib)
            print(f"machine limits: compiled for {args.target}", flush=True)
        with open(os.path.join(staged, "models.json"), "w") as file:
            json.dump(manifest, file, indent=1)
        print("compressing (xz) ...", flush=True)
        with tarfile.open(os.path.join(args.dir, "models.tar.xz"), "w:xz", preset=3) as archive:
            archive.add(staged, arcname="models")
    total = sum(os.path.getsize(os.path.join(dirpath, f)) for dirpath, _, files in os.walk(args.dir) for f in files)
    print(f"wrote {args.dir}: {total / 2**20:.1f} MiB")
    return 0


def _target_runs_here(target: str) -> bool:
    flags = _cpu_flags()
    return target in TARGET_FLAGS and all(flag in flags for flag in TARGET_FLAGS[target])


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_name() -> str:
    from cpu_limits import cpu_name

    return cpu_name()


def unpack(directory: str) -> dict:
    """Unpack the runtime and the models (once) and return the models' manifest."""
    site = os.path.join(directory, "site")
    if not os.path.isdir(os.path.join(site, "tvm")):
        with tarfile.open(os.path.join(directory, "tvmrt.tgz")) as archive:
            archive.extractall(site, filter="data")
    if not os.path.exists(os.path.join(directory, "models", "models.json")):
        with tarfile.open(os.path.join(directory, "models.tar.xz")) as archive:
            archive.extractall(directory, filter="data")
    with open(os.path.join(directory, "models", "models.json")) as file:
        manifest = json.load(file)
    recipes = {entry["label"]: entry["recipe"] for entry in manifest["models"] if entry["recipe"]}
    recipes.update({entry["reference"]: entry["reference_recipe"] for entry in manifest["models"] if entry["reference_recipe"]})
    digests = {entry["label"]: entry.get("weights_sha256") for entry in manifest["models"]}
    for label, recipe in recipes.items():
        path = os.path.join(directory, "models", f"{label}.onnx")
        if not os.path.exists(path):
            build_onnx(recipe, path)
            if digests.get(label) and weights_digest(path) != digests[label]:
                print(f"warning: {label}.onnx rebuilt here has other weights than the compiled model's (numpy's random streams differ)", flush=True)
    return manifest


def measure(args) -> int:
    manifest = unpack(args.dir)
    missing = [flag for flag in TARGET_FLAGS.get(manifest["target"], ()) if flag not in _cpu_flags()]
    if missing:
        raise SystemExit(f"this CPU lacks {', '.join(missing)}: the artifacts were built for {manifest['target']}")
    thread_counts = [int(t) for t in args.threads.split(",")]
    labels = {entry["label"] for entry in manifest["models"]}
    unknown = sorted(set(args.models.split(",")) - labels) if args.models else []
    if unknown:
        raise SystemExit(f"no model {', '.join(unknown)} in {args.dir} (it has {', '.join(sorted(labels))})")
    print(f"CPU: {_cpu_name()}, {os.cpu_count()} logical CPUs; artifacts for {manifest['target']}", flush=True)
    print("thread pool settings: " + ", ".join(f"{name}={os.environ.get(name, '(unset)')}" for name in POOL_VARIABLES), flush=True)
    rounds = {threads: [] for threads in thread_counts}
    limits = {}  # threads: the machine limits of every round
    for round_index in range(args.rounds):
        for threads in thread_counts:
            environment = dict(
                os.environ, TVM_NUM_THREADS=str(threads), PYTHONPATH=os.pathsep.join([os.path.join(args.dir, "site"), os.path.join(args.dir, "src")])
            )
            command = [sys.executable, os.path.abspath(__file__), "one", args.dir, str(threads), str(args.runs), str(args.profile_repeat), args.models or "all"]
            done = subprocess.run(command, env=environment, stdout=subprocess.PIPE, text=True)
            if done.returncode:
                print(done.stdout)
                raise SystemExit(f"the {threads}-thread run failed (exit {done.returncode})")
            child = json.loads(done.stdout.strip().splitlines()[-1])
            rows = child["rows"]
            rounds[threads].append(rows)
            if child["limits"] is not None:
                limits.setdefault(threads, []).append(child["limits"])
            for row in rows:
                if "error" in row:
                    continue
                print(
                    f"round {round_index + 1}: {row['label']:16s} {threads:2d} thread(s): onnxruntime {row['onnxruntime_ms']:8.2f} ms, "
                    f"slimtvm {row['slimtvm_ms']:8.2f} ms (alone {row['profile']['run'] / 1e3:.2f})",
                    flush=True,
                )
    results = {threads: merged_rounds(rounds[threads]) for threads in thread_counts}
    report = {
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "target": manifest["target"],
        "runs": args.runs,
        "rounds": args.rounds,
        "environment": {name: os.environ.get(name) for name in POOL_VARIABLES},  # which thread pool, pinned or not
        "results": results,
        "limits": limits,
    }
    print_report(report, thread_counts)
    print_limits(limits, thread_counts)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file)
    return 0


def merged_rounds(rounds: list) -> list:
    """One row per model from the rows of every round at one thread count: the round whose
    slimtvm/onnxruntime ratio is the median (the lower one of an even count), with every round's
    ``(onnxruntime_ms, slimtvm_ms, onnxruntime_alone_ms, slimtvm_alone_ms)`` under ``"rounds"``; a model that failed its check in
    any round is reported as failed."""
    merged = []
    for first in rounds[0]:
        label = first["label"]
        rows = [next(row for row in round_rows if row["label"] == label) for round_rows in rounds]
        failed = [row for row in rows if "error" in row]
        if failed:
            merged.append(failed[0])
            continue
        ordered = sorted(rows, key=lambda row: row["slimtvm_ms"] / row["onnxruntime_ms"])
        chosen = dict(ordered[(len(ordered) - 1) // 2])
        chosen["rounds"] = [(row["onnxruntime_ms"], row["slimtvm_ms"], row.get("onnxruntime_alone_ms"), row.get("slimtvm_alone_ms")) for row in rows]
        merged.append(chosen)
    return merged


def alone_cell(row: dict) -> str:
    """The table's 'alone' cell: both engines timed alone, or (runs saved before session 33's
    change) slimtvm's whole-run median while profiling."""
    if row.get("slimtvm_alone_ms") is None:
        return f"– / {row['profile']['run'] / 1e3:.2f}"
    return f"{row['onnxruntime_alone_ms']:.2f} / {row['slimtvm_alone_ms']:.2f} ({row['slimtvm_alone_ms'] / row['onnxruntime_alone_ms']:.2f})"


def print_limits(limits: dict, thread_counts: list) -> None:
    """The machine's limits per thread count (medians over the rounds): what the models' scaling
    can be read against."""
    counts = [threads for threads in thread_counts if limits.get(threads)]
    if not counts:
        return
    medians = {threads: {key: float(np.median([entry[key] for entry in limits[threads]])) for key in limits[threads][0]} for threads in counts}
    base = medians[counts[0]]
    print()
    print("machine limits (benchmarks/cpu_limits.py kernels, TVM's thread pool; medians over the rounds):")
    print(
        "| threads | fp32 G MAC/s (× first) | read from memory GB/s (×) | read from L3 GB/s (×) | parallel loop fork + join µs "
        "| 1 MiB hand-off µs: own part / another thread's |"
    )
    print("|---|---|---|---|---|---|")
    for threads in counts:
        row = medians[threads]
        handoff = f"{row['handoff_own_us']:.1f} / {row['handoff_other_us']:.1f}" if "handoff_own_us" in row else "–"
        print(
            f"| {threads} | {row['fp32_gmacs']:.0f} ({row['fp32_gmacs'] / base['fp32_gmacs']:.2f}) | {row['memory_gbs']:.1f} ({row['memory_gbs'] / base['memory_gbs']:.2f}) | "
            f"{row['cache_gbs']:.1f} ({row['cache_gbs'] / base['cache_gbs']:.2f}) | {row['launch_us']:.2f} | {handoff} |"
        )


def print_report(report: dict, thread_counts: list) -> None:
    results, first = report["results"], thread_counts[0]
    for threads in thread_counts:
        for row in results[threads]:
            if "error" in row:
                print(f"NOT MEASURED: {row['label']} at {threads} thread(s): outputs disagree ({row['error']})")
    failed = {row["label"] for threads in thread_counts for row in results[threads] if "error" in row}
    labels = [row["label"] for row in results[first] if row["label"] not in failed]
    kinds = {row["label"]: row for row in results[first]}
    print()
    rounds = report.get("rounds", 1)
    print(
        f"CPU: {report['cpu']}; artifacts for {report['target']}; median of {report['runs']} runs per engine in turns"
        + (f"; the median round of {rounds} (ratio range over the rounds in brackets)" if rounds > 1 else "")
        + f"; alone: each engine's {report['runs']} runs in one block after {ALONE_WARM_SECONDS} s of dropped runs"
        + " (older runs: slimtvm's whole runs while profiling)"
    )
    print(
        "| model | threads | onnxruntime ms | slimtvm ms | slimtvm/onnxruntime | alone: onnxruntime ms / slimtvm ms (ratio) | onnxruntime ×threads | slimtvm ×threads |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label in labels:
        base = kinds[label]
        for threads in thread_counts:
            row = next(r for r in results[threads] if r["label"] == label)
            name = f"{label} vs float {row['reference']}" if row["kind"] == "binary" else label
            ratios = [entry[1] / entry[0] for entry in row.get("rounds", [])]
            spread = f" ({min(ratios):.2f}–{max(ratios):.2f})" if len(ratios) > 1 else ""
            print(
                f"| {name} | {threads} | {row['onnxruntime_ms']:.2f} | {row['slimtvm_ms']:.2f} | {row['slimtvm_ms'] / row['onnxruntime_ms']:.2f}{spread} | "
                f"{alone_cell(row)} | {base['onnxruntime_ms'] / row['onnxruntime_ms']:.2f} | {base['slimtvm_ms'] / row['slimtvm_ms']:.2f} |"
            )
    last = thread_counts[-1]
    for label in labels:
        base, top = kinds[label], next(r for r in results[last] if r["label"] == label)
        n = last / first
        serial = (top["profile"]["run"] / base["profile"]["run"] - 1 / n) / (1 - 1 / n) if n > 1 else 0.0
        slow = [
            (name, a / b)
            for name, a, b in zip(base["profile"]["names"], base["profile"]["calls"], top["profile"]["calls"])
            if a >= PROFILE_MIN_US and not name.startswith("vm.")
        ]
        slow.sort(key=lambda item: item[1])
        listed = ", ".join(f"{name} ×{up:.1f}" for name, up in slow[:6])
        print(
            f"{label}: {last} vs {first} thread(s), serial fraction {serial:.3f} (Amdahl, whole runs); least-scaling kernels ≥ {PROFILE_MIN_US:.0f} µs: {listed}"
        )
    for label in labels:
        for threads in thread_counts:
            row = next(r for r in results[threads] if r["label"] == label)
            ratio = row["slimtvm_ms"] / row["onnxruntime_ms"]
            timed_alone = row.get("slimtvm_alone_ms") is not None
            alone_ratio = row["slimtvm_alone_ms"] / row["onnxruntime_alone_ms"] if timed_alone else None
            if row["kind"] == "binary":
                alone = f"; alone {1 / alone_ratio:.2f}x" if timed_alone else ""
                print(f"claim: {label} at {threads} thread(s): {1 / ratio:.2f}x faster than onnxruntime's float {row['reference']}{alone} ({row['check']})")
            else:
                alone = f"; alone {alone_ratio:.2f}" if timed_alone else ""
                print(f"claim: {label} at {threads} thread(s): slimtvm/onnxruntime = {ratio:.2f}{alone} ({row['check']})")


def one_thread_count(directory: str, threads: int, runs: int, profile_repeat: int, only: str = "all") -> int:
    """Child process: time and profile every model at ``threads`` (TVM_NUM_THREADS already set),
    or those of the comma-separated labels ``only``."""
    from binary_models import cosine
    from profile_kernels import profile

    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_in_turns

    set_num_threads(threads)
    models = os.path.join(directory, "models")
    with open(os.path.join(models, "models.json")) as file:
        manifest = json.load(file)
    limits = None
    if "limits" in manifest:
        from cpu_limits import machine_limits

        limits = machine_limits(os.path.join(models, LIMITS_LIBRARY), manifest["limits"], threads=threads)
    rows = []
    for entry in manifest["models"]:
        label = entry["label"]
        if only != "all" and label not in only.split(","):
            continue
        library = os.path.join(models, f"{label}.so")
        model = slimtvm.load(library)
        x = np.load(os.path.join(models, f"{label}.input.npy"))
        feed = {model.input_names[0]: x}
        ours = model.run(feed)
        checked = onnxruntime_session(os.path.join(models, f"{label}.onnx"), threads)
        theirs = dict(zip((o.name for o in checked.get_outputs()), checked.run(None, {checked.get_inputs()[0].name: x})))
        if entry["kind"] == "binary":
            agreement = min(cosine(ours[name], theirs[name]) for name in theirs)
            check = f"cosine {agreement:.6f} to onnxruntime on the binary model"
            agrees = agreement >= BINARY_COSINE
        else:
            difference = max(relative_difference(ours[name], theirs[name]) for name in theirs)
            check = f"max relative difference {difference:.1e} to onnxruntime"
            agrees = difference <= FP32_AGREEMENT
        expected_path = os.path.join(models, f"{label}.expected.npz")
        if os.path.exists(expected_path):
            with np.load(expected_path) as expected:
                here = max(relative_difference(ours[name], expected[name]) for name in expected.files)
            check += f", {here:.1e} to the preparing machine's run"
            agrees = agrees and here <= FP32_AGREEMENT
        if not agrees:  # not timed: a time is reported only for checked outputs
            print(f"{label} at {threads} thread(s): outputs disagree ({check}); not timed", file=sys.stderr, flush=True)
            rows.append({"label": label, "kind": entry["kind"], "reference": entry["reference"], "threads": threads, "error": check})
            continue
        session = onnxruntime_session(os.path.join(models, f"{entry['reference']}.onnx"), threads)
        reference_feed = {session.get_inputs()[0].name: x}
        run_ours, run_theirs = (lambda: model.run(feed)), (lambda: session.run(None, reference_feed))
        for _ in range(3):
            run_ours(), run_theirs()
        (ours_ms, theirs_ms), count = time_in_turns([run_ours, run_theirs], runs)
        # Then each engine alone: one block of every run after ALONE_WARM_SECONDS of dropped runs.
        (ours_alone_ms, theirs_alone_ms), _ = time_in_turns([run_ours, run_theirs], runs, block=runs, warm_seconds=ALONE_WARM_SECONDS)
        kernels = profile(_LoadedLibrary(library), threads, profile_repeat)
        rows.append(
            {
                "label": label,
                "kind": entry["kind"],
                "reference": entry["reference"],
                "threads": threads,
                "onnxruntime_ms": theirs_ms,
                "slimtvm_ms": ours_ms,
                "onnxruntime_alone_ms": theirs_alone_ms,
                "slimtvm_alone_ms": ours_alone_ms,
                "runs": count,
                "check": check,
                "profile": kernels,
            }
        )
        print(f"{label}: {threads} thread(s) done", file=sys.stderr, flush=True)
    print(json.dumps({"rows": rows, "limits": limits}))
    return 0


class _LoadedLibrary:
    """What profile_kernels.profile needs of an artifact: its library path and a loader."""

    def __init__(self, library_path: str):
        self.library_path = library_path

    def load(self):
        import slimtvm

        return slimtvm.load(self.library_path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("prepare", help="here: compile the models and write DIR")
    make.add_argument("dir")
    make.add_argument("--target", default="x86-64-avx512-vpopcnt", choices=sorted(TARGET_FLAGS))
    make.add_argument("--models", default=DEFAULT_MODELS)
    make.add_argument("--python-version", default="3.12", help="the many-core machine's CPython, for TVM's runtime wheels (default 3.12)")
    make.add_argument("--runtime-from-here", action="store_true", help="pack this Python's installed TVM (no download) instead of the wheels")
    make.add_argument("--no-limits", action="store_true", help="leave out the machine-limit kernels (benchmarks/cpu_limits.py)")
    make.add_argument("--limits-memory-mib", type=int, default=1024, help="the memory read kernel's array (default 1024 MiB: beyond any L3)")
    make.add_argument("--limits-cache-mib", type=int, default=64, help="the L3 read kernel's array (default 64 MiB: past 16 cores' L2s)")
    make.add_argument("--bireal-onnx", help="an exported Bi-Real Net 18 (default: export birealnet18.py with torch)")
    timing = commands.add_parser("measure", help="there: time every model at every thread count")
    timing.add_argument("dir")
    timing.add_argument("--threads", default="1,2,4,8,16")
    timing.add_argument("--runs", type=int, default=40, help="timed runs per engine (default 40)")
    timing.add_argument("--profile-repeat", type=int, default=10, help="instrumented runs per kernel profile (default 10)")
    timing.add_argument("--json", help="also write the results here")
    timing.add_argument("--rounds", type=int, default=1, help="measure every thread count this many times, round after round (default 1)")
    timing.add_argument("--models", help="only these of DIR's models (comma-separated labels; default all)")
    again = commands.add_parser("report", help="print the table and claims of a measure run's --json again")
    again.add_argument("json")
    child = commands.add_parser("one")
    for name in ("dir", "threads", "runs", "profile_repeat", "models"):
        child.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "prepare":
        return prepare(args)
    if args.command == "measure":
        if args.rounds < 1:
            parser.error(f"--rounds must be at least 1, not {args.rounds}")
        return measure(args)
    if args.command == "report":
        with open(args.json) as file:
            report = json.load(file)
        report["results"] = {int(threads): rows for threads, rows in report["results"].items()}
        print_report(report, sorted(report["results"]))
        print_limits({int(threads): entries for threads, entries in report.get("limits", {}).items()}, sorted(report["results"]))
        return 0
    return one_thread_count(args.dir, int(args.threads), int(args.runs), int(args.profile_repeat), args.models)


if __name__ == "__main__":
    sys.exit(main())
