"""The ``slimtvm`` command: compile | run | bench | tune | inspect.

A problem with the user's input prints one line, ``slimtvm: error: ...``, and exits with status 2;
no partial output file is left behind. A bug in slimtvm prints ``slimtvm: internal error: ...`` with
the path of its traceback and exits with status 1. ``bench`` exits with status 3 when the outputs
differ from onnxruntime's.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from collections import Counter

from .errors import SlimError, first_line

EXIT_INTERNAL_ERROR = 1  # a bug in slimtvm: the traceback goes to a log file
EXIT_USER_ERROR = 2
EXIT_OUTPUTS_DIFFER = 3  # bench: the artifact and onnxruntime disagree (a finding, not a usage error)


def _one_line_warnings(message, category, filename, lineno, file=None, line=None):
    print(f"slimtvm: warning: {message}", file=sys.stderr)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slimtvm", description="Compile compressed ONNX networks ahead of time with Apache TVM.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{compile,run,bench,tune,inspect}")

    p = sub.add_parser("compile", help="compile MODEL.onnx into OUT.so + OUT.json")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("-o", "--output", required=True, help="output library (.so); the manifest is written beside it as .json")
    p.add_argument("--target", default="host", help="host | x86-64 | x86-64-avx512 | x86-64-avx512-vpopcnt | aarch64 | TVM target JSON (default: host)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...", help="static shape of an input with dynamic dimensions (repeatable)")
    p.add_argument("--db", metavar="DIR", help="tuning database from `slimtvm tune`: its best schedules replace the defaults")
    p.add_argument(
        "--binarize",
        choices=["weights", "weights+activations"],
        help="lossy: binarize float Conv/Gemm/MatMul layers (BWN or XNOR-Net, α = mean|W| per output channel) and report the error",
    )
    p.add_argument(
        "--prune",
        type=float,
        metavar="AMOUNT",
        help="lossy: zero the AMOUNT share (0..1) of weights of smallest magnitude (torch.nn.utils.prune L1) and report the error",
    )
    p.add_argument("--prune-scope", choices=["global", "layer"], default=None, help="with --prune: across all layers together (global, default) or per layer")
    p.add_argument(
        "--prune-filters", type=float, metavar="AMOUNT", help="lossy: zero the AMOUNT share of each conv's filters of smallest L1 norm (removed exactly)"
    )
    p.add_argument(
        "--low-rank",
        metavar="SPEC",
        help="lossy: factorise Conv/Gemm/MatMul layers (SVD; Tucker-2 for k×k convs) where the chain runs faster; SPEC: rank=F, energy=E, error=X or vbmf",
    )
    p.add_argument("--no-speed-gate", action="store_true", help="with --low-rank: factorise every layer SPEC reduces, faster or not (for accuracy studies)")
    p.add_argument(
        "--keep-float",
        default=None,
        metavar="LIST",
        help="with a lossy step: layers left as they are, comma-separated names or first/last/none "
        "(default first,last for --binarize and --low-rank, none for --prune)",
    )
    p.add_argument("--calibration", metavar="FILE.npz", help="with a lossy step: inputs to measure the error on (default: 8 seeded normal samples)")
    p.add_argument("--save-onnx", metavar="PATH.onnx", help="with a lossy step: also write the rewritten float model (for onnxruntime, fine-tuning)")
    p.add_argument(
        "--sparse",
        choices=["auto", "timed", "always", "never"],
        default="auto",
        help="convs with zero weights: the sparse kernel where it pays (auto: a measured table, timed on this CPU near its thresholds), "
        "where it measured faster on this CPU (timed: every conv timed both ways), for every one it takes (always), or dense (never)",
    )
    p.add_argument(
        "--conv-algorithm",
        choices=["auto", "direct"],
        default="auto",
        help="float convs: Winograd where its kernel takes them (auto), or every one on the direct kernel (direct: no transform rounding)",
    )

    p = sub.add_parser("tune", help="tune MODEL.onnx's kernels with MetaSchedule (XGBoost) into a database")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--db", required=True, metavar="DIR", help="database folder (created if missing; a run resumes what is there)")
    p.add_argument("--trials", type=int, required=True, help="measured schedules the database should hold for this model, in all")
    p.add_argument("--target", default="host", help="host | x86-64 | x86-64-avx512 | x86-64-avx512-vpopcnt | aarch64 | TVM target JSON (default: host)")
    p.add_argument("--rpc", metavar="HOST:PORT[:KEY]", help="measure on the TVM RPC server there (needed for another architecture)")
    p.add_argument("--tracker", metavar="HOST:PORT", help="measure on every device registered at this TVM RPC tracker under --key (a farm)")
    p.add_argument("--key", help="the device key at --tracker")
    p.add_argument("--parallel", type=int, default=None, metavar="N", help="candidates built at once on this machine (default: every core)")
    p.add_argument(
        "--measure-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="a measurement on a farm device taking longer is given up and retried on another device (default 300)",
    )
    p.add_argument("--threads", type=int, default=None, help="threads kernels are measured with (default: all physical cores)")
    p.add_argument("--trials-per-round", type=int, default=8, help="candidates measured per search round (default 8)")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...", help="static shape of an input with dynamic dimensions")
    p.add_argument("--seed", type=int, default=None, help="seed of the search (default: random)")
    p.add_argument("--conv-algorithm", choices=["auto", "direct"], default="auto", help="as for compile: tune the kernels of that build (default auto)")
    p.add_argument(
        "--all-kernels", action="store_true", help="also tune kernels without a slimtvm template (pooling, element-wise) in MetaSchedule's generic space"
    )

    p = sub.add_parser("run", help="run a compiled artifact on inputs from an .npz file")
    p.add_argument("library", help="compiled library (.so) with its .json manifest beside it")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help=".npz file keyed by the model's input names")
    source.add_argument("--random-input", action="store_true", help="make random inputs of the manifest's shapes")
    p.add_argument("--output", help="write the outputs to this .npz file, keyed by output names")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-input (default 0)")

    p = sub.add_parser("bench", help="time an artifact against onnxruntime in one process")
    p.add_argument("library", help="compiled library (.so)")
    p.add_argument("--vs-onnxruntime", required=True, metavar="MODEL.onnx", help="the ONNX model the library was compiled from")
    p.add_argument("--threads", type=int, default=1, help="threads for both engines (default 1)")
    p.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: about 10 s worth, 5..200)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per engine (default 3)")

    p = sub.add_parser("inspect", help="print a per-layer table of an ONNX model and what slimtvm does with it")
    p.add_argument("model", help="ONNX model file")
    p.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...", help="static shape of an input with dynamic dimensions")
    p.add_argument("--target", default="host", help="the target whose kernels and layouts to show (as for compile; default: host)")
    p.add_argument("--no-passes", action="store_true", help="show the ONNX graph alone: no passes, no lowering (no TVM needed)")
    p.add_argument("--conv-algorithm", choices=["auto", "direct"], default="auto", help="as for compile: show the kernels of that build (default auto)")
    return parser


def _cmd_compile(args) -> int:
    from .compiler.build import compile_model
    from .frontend.onnx_model import parse_shape_overrides

    keep = None if args.keep_float is None else tuple(item.strip() for item in args.keep_float.split(",") if item.strip())
    binarize = prune = low_rank = None
    if args.binarize:
        from .compress.binarize_float_layers import BinarizeRequest

        binarize = BinarizeRequest(args.binarize, keep or ("first", "last"), args.calibration)
    if args.prune is not None or args.prune_filters is not None:
        from .compress.prune_float_layers import PruneRequest

        prune = PruneRequest(args.prune, args.prune_scope or "global", args.prune_filters, keep or ("none",), args.calibration)
    elif args.prune_scope is not None:
        raise SlimError("--prune-scope only applies with --prune")
    if args.low_rank is not None:
        from .compress.low_rank_float_layers import LowRankRequest
        from .compress.low_rank_ranks import parse_spec

        parse_spec(args.low_rank)  # a bad SPEC fails before any work
        low_rank = LowRankRequest(args.low_rank, keep or ("first", "last"), args.calibration, speed_gate=not args.no_speed_gate)
    elif args.no_speed_gate:
        raise SlimError("--no-speed-gate only applies with --low-rank")
    if binarize is None and prune is None and low_rank is None and (args.calibration or keep is not None):
        raise SlimError("--keep-float and --calibration only apply with --binarize, --prune or --low-rank")
    artifact = compile_model(
        args.model,
        args.output,
        target=args.target,
        input_shapes=parse_shape_overrides(args.input_shape),
        db=args.db,
        binarize=binarize,
        sparse=args.sparse,
        prune=prune,
        save_onnx=args.save_onnx,
        low_rank=low_rank,
        conv_algorithm=args.conv_algorithm,
    )
    manifest = artifact.manifest
    print(f"wrote {artifact.library_path} ({manifest['library']['bytes']:,} bytes) and {artifact.manifest_path}")
    print(f"target: {manifest['target']['preset']} ({manifest['target']['arch']}), {manifest['timings_seconds']['total']:.1f} s")
    for info in manifest["inputs"]:
        print(f"input  {info['name']}: {info['dtype']}{info['shape']}")
    for info in manifest["outputs"]:
        shape = "[shape known at run time]" if info["shape"] is None else "[" + ", ".join("?" if d is None else str(d) for d in info["shape"]) + "]"
        print(f"output {info['name']}: {info['dtype']}{shape}")
    if manifest.get("onnx_rewrites"):
        print("onnx rewrites before import: " + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in manifest["onnx_rewrites"].items()))
    if "binarize_request" in manifest:
        from .compress.binarize_float_layers import describe

        print("\n".join(describe(manifest["binarize_request"])))
    if "prune_request" in manifest:
        from .compress.prune_float_layers import describe as describe_pruning

        print("\n".join(describe_pruning(manifest["prune_request"])))
    if "low_rank_request" in manifest:
        from .compress.low_rank_float_layers import describe as describe_low_rank

        print("\n".join(describe_low_rank(manifest["low_rank_request"])))
    if args.save_onnx:
        print(f"wrote the rewritten float model to {args.save_onnx} (onnxruntime runs it; the library matches it)")
    for entry in manifest["passes"]:
        if _worth_a_line(entry):
            print(_describe_pass(entry))
    if "tuning" in manifest:
        tuned = manifest["tuning"]["tuned_kernels"]
        print(f"tuning database {manifest['tuning']['database']}: {len(tuned)} kernels from its records, the rest default schedules")
    return 0


def _cmd_tune(args) -> int:
    from .compiler.layer_timing import conv_timer, discard_timer
    from .frontend.onnx_model import parse_shape_overrides
    from .tuning.tune import tune_model

    options = {"conv_algorithm": args.conv_algorithm}
    timer = conv_timer(args.target, options=options) if not (args.rpc or args.tracker) else None  # measured here: choose here
    try:
        summary = tune_model(
            args.model,
            args.db,
            target=args.target,
            trials=args.trials,
            rpc=args.rpc,
            threads=args.threads,
            input_shapes=parse_shape_overrides(args.input_shape),
            trials_per_round=args.trials_per_round,
            seed=args.seed,
            all_kernels=args.all_kernels,
            tracker=args.tracker,
            key=args.key,
            parallel=args.parallel,
            measure_timeout=args.measure_timeout,
            sparse_timer=timer,
            conv_algorithm=args.conv_algorithm,
        )
    finally:
        discard_timer(timer)
    retried = f" ({summary.retried} measurements retried on another device)" if summary.retried else ""
    print(f"{summary.database}: {summary.trials_before} trials before, {summary.trials_run} measured now, {summary.seconds:.0f} s{retried}")
    default_total = best_total = 0.0
    for task in summary.tasks:
        default, best = summary.default_seconds.get(task.name), summary.best_seconds.get(task.name)
        line = f"  {task.name} (x{task.weight}): best {best * 1e3:.3f} ms" if best else f"  {task.name}: no valid measurement"
        if default:
            line += f", default {default * 1e3:.3f} ms"
        print(line)
        if best:
            best_total += task.weight * best
        if default:
            default_total += task.weight * default
    print(f"tuned kernels: {best_total * 1e3:.2f} ms per run" + (f" (default schedules measured {default_total * 1e3:.2f} ms)" if default_total else ""))
    algorithm = f" --conv-algorithm {args.conv_algorithm}" if args.conv_algorithm != "auto" else ""
    print(f"use it: slimtvm compile {args.model} -o model.so --target {args.target} --db {args.db}{algorithm}")
    return 0


def _worth_a_line(entry: dict) -> bool:
    """Every pass gets a line, except the batch split of a batch of one (nothing to split), and the
    channels-first, 3-D conv, matmul-row, padding-tap, transposed-conv, matmul-column, weight-packing
    and output-storage rewrites of a model they find nothing in."""
    if entry["name"] == "channels_first":
        return entry["stretches"] > 0
    if entry["name"] == "transposed_convs":
        return entry["rewritten"] > 0
    if entry["name"] == "matmul_columns":
        return entry["attentions"] + entry["products"] > 0
    if entry["name"] == "padding_taps":
        return entry["convs_cropped"] + entry["convs_in_regions"] > 0
    if entry["name"] in ("conv3d_as_conv2d", "matmul_rows"):
        return entry["rewritten"] > 0
    if entry["name"] == "packed_matmuls":
        return entry["packed"] > 0
    if entry["name"] == "depthwise_projections":
        return entry["fused"] > 0
    if entry["name"] == "storage_by_shape":
        return entry["moved"] > 0
    return not (entry["name"] == "split_batch" and entry["why_not"] == "batch 1")


def _describe_pass(entry: dict) -> str:
    if entry["name"] == "channels_first":
        return (
            f"channels_first: {entry['stretches']} channels-last stretches between transposes run in NCHW "
            f"({entry['matmuls_as_convs']} matmuls as 1×1 convs, the transposes gone)"
        )
    if entry["name"] == "matmul_rows":
        return f"matmul_rows: {entry['rewritten']} matmuls of a batch of one-row blocks by one weight matrix run as one product of all the rows"
    if entry["name"] == "conv3d_as_conv2d":
        return f"conv3d_as_conv2d: {entry['rewritten']} 3-D convs run as 2-D convs over frames (their temporal taps stacked along the channels)"
    if entry["name"] == "padding_taps":
        return (
            f"padding_taps: {entry['convs_cropped']} convs cut to the kernel taps that read the image ({entry['taps_removed']} taps read only zero padding), "
            f"{entry['convs_in_regions']} computed in regions without the taps on padding (most of their multiply-adds were with zeros)"
        )
    if entry["name"] == "depthwise_projections":
        return f"depthwise_projections: {entry['fused']} depthwise convs run in one kernel with the 1×1 conv after them (their output never written to memory)"
    if entry["name"] == "packed_matmuls":
        return f"packed_matmuls: {entry['packed']} matmuls by a constant weight read it in column panels (packed once, at compile time)"
    if entry["name"] == "transposed_convs":
        return f"transposed_convs: {entry['rewritten']} transposed convs run as a conv on the input and a depth-to-space (slimtvm's conv kernels)"
    if entry["name"] == "matmul_columns":
        return (
            f"matmul_columns: {entry['attentions']} attentions run on keys padded to whole vectors, "
            f"{entry['products']} other matmuls of two activations on padded columns"
        )
    if entry["name"] == "fold_batchnorm":
        text = f"fold_batchnorm: {entry['batchnorms_folded']} folded"
        if entry["folded_by_position"]:
            text += " (" + ", ".join(f"{k} {v}" for k, v in entry["folded_by_position"].items()) + ")"
        text += f", {entry['batchnorms_decomposed']} decomposed to mul+add"
        if entry["decomposed_because"]:
            text += " (" + "; ".join(f"{v}× {k}" for k, v in entry["decomposed_because"].items()) + ")"
        return text
    if entry["name"] == "binarize":
        text = f"binarize: {entry['binary_convs']} binary convs, {entry['binary_dense']} binary dense layers (XNOR + popcount)"
        if entry.get("binary_weight_layers"):
            text += f"; {entry['binary_weight_layers']} layers with binary weights and a float input (BWN) keep the fp32 kernel"
        if entry["stayed_float_because"]:
            text += "; stayed float: " + "; ".join(f"{v}× {k}" for k, v in entry["stayed_float_because"].items())
        return text
    if entry["name"] == "kernels":
        by_family = ", ".join(f"{name} {count}" for name, count in entry["by_family"].items())
        text = f"kernels: {entry['slimtvm']} slimtvm ({by_family or 'none'}), {entry['generic']} generic (element-wise, pooling, layout)"
        if entry["generic_fallbacks"]:
            text += f"; convolutions/matmuls on the generic schedule: {len(entry['generic_fallbacks'])} ({', '.join(entry['generic_fallbacks'])})"
        return text
    if entry["name"] == "sparsity":
        layers = entry["layers"]
        with_zeros = sum(1 for layer in layers if layer["zeros"] > 0)
        filters = sum(layer["zero_filters"] for layer in layers if layer["op"] == "conv2d")
        inputs = sum(layer["zero_inputs"] for layer in layers if layer["op"] == "conv2d")
        return (
            f"sparsity: {100 * entry['flop_weighted_zeros']:.1f}% of multiply-adds have a zero weight; "
            f"{with_zeros} of {len(layers)} conv/matmul weights have zeros; {filters} zero filters, {inputs} zero input channels"
        )
    if entry["name"] == "dead_channels":
        text = (
            f"dead_channels: {entry['filters_removed']} filters and {entry['input_channels_removed']} input channels removed exactly "
            f"({entry['constants_absorbed']} constant channels folded into the layers after them)"
        )
        if entry["macs_before"] != entry["macs_after"]:
            text += f"; conv/matmul multiply-adds {entry['macs_before'] / 1e6:.1f} M → {entry['macs_after'] / 1e6:.1f} M"
        if entry["constant_channels_kept"]:
            text += "; constant channels kept: " + "; ".join(f"{v}× {k}" for k, v in entry["constant_channels_kept"].items())
        return text
    if entry["name"] == "sparse_layers":
        dense = Counter(layer["why"] for layer in entry["layers"] if layer["kernel"] == "dense")
        text = f"sparse_layers: {entry['sparse_convs']} convs run the sparse kernel"
        matmuls = sum(1 for layer in entry["layers"] if layer.get("op") == "matmul" and layer["kernel"] == "sparse_conv2d")
        if matmuls:
            text += f" ({matmuls} of them token matmuls, as 1×1 convs over the tokens)"
        if entry.get("timed_convs"):
            timed = [layer for layer in entry["layers"] if "table_kernel" in layer]
            overruled = sum(1 for layer in timed if layer["table_kernel"] != layer["kernel"])
            text += f" ({entry['timed_convs']} timed both ways on this CPU; the table would have chosen the other kernel for {overruled})"
        if entry.get("all_zero_convs"):
            text += f", {entry['all_zero_convs']} have no nonzero weight (zeros, no kernel)"
        if dense:
            text += "; with zeros but dense: " + "; ".join(f"{v}× {k}" for k, v in dense.items())
        return text
    if entry["name"] == "split_batch":
        if not entry["images"]:
            return f"split_batch: the batch runs whole ({entry['why_not']})"
        copies = "once per image" if entry["pieces"] == entry["images"] else f"once per group of images ({entry['pieces']} groups)"
        return (
            f"split_batch: the first {entry['layers_per_image']} operations run {copies} up to a {entry['cut_bytes_per_image'] / 1024:.0f} KB-per-image "
            f"tensor, the rest on the whole batch of {entry['images']} (kernel and layer counts below include every copy)"
        )
    if entry["name"] == "binary_blocks":
        return f"binary_blocks: {entry['thresholds_fused']} BN → Sign pairs fused into integer thresholds (packed bits between binary convs), {entry['max_pools_on_bits']} max-pools on bits (OR)"
    if entry["name"] == "storage_by_shape":
        return f"storage_by_shape: {entry['moved']} kernel outputs moved to the planned storage a same-shaped output last held (its lines in the writing core's cache)"
    return f"{entry['name']}: " + ", ".join(f"{k}={v}" for k, v in entry.items() if k != "name")


def _cmd_run(args) -> int:
    import numpy as np

    from .atomic_files import atomic_path, check_writable_folder
    from .runtime.artifact import load
    from .runtime.npz_files import load_npz

    model = load(args.library)
    inputs = model.random_inputs(args.seed) if args.random_input else load_npz(args.input, "--input")
    if args.output and not args.output.endswith(".npz"):
        raise SlimError(f"--output {args.output} must end in .npz")
    if args.output:
        check_writable_folder(args.output, "output")
        if os.path.isdir(args.output):
            raise SlimError(f"--output {args.output} is a directory")
    outputs = model.run(inputs)
    for name, value in outputs.items():
        line = f"{name}: {value.dtype}{list(value.shape)}"
        if value.size and np.issubdtype(value.dtype, np.number):
            line += f"  min {value.min():.6g}  max {value.max():.6g}  mean {value.mean():.6g}"
            if value.ndim == 2 and value.shape[0] == 1 and value.shape[1] > 1:
                top = np.argsort(value[0])[::-1][:5]
                line += "  top-5 " + ", ".join(f"{int(i)}:{value[0, i]:.4g}" for i in top)
        print(line)
    if args.output:
        with atomic_path(args.output) as tmp:
            with open(tmp, "wb") as handle:
                np.savez(handle, **outputs)
        print(f"wrote {args.output}")
    return 0


def _cmd_bench(args) -> int:
    from .frontend.onnx_model import load_onnx
    from .runtime.artifact import load
    from .runtime.bench import bench

    if not os.path.isfile(args.vs_onnxruntime):
        raise SlimError(f"model file not found: {args.vs_onnxruntime}")
    load_onnx(args.vs_onnxruntime)
    if args.runs is not None and args.runs < 1:
        raise SlimError(f"--runs must be at least 1, not {args.runs}")
    model = load(args.library)
    result = bench(model, args.vs_onnxruntime, threads=args.threads, runs=args.runs, warmup=args.warmup)
    print("\n".join(result.lines()))
    return 0 if result.outputs_agree else EXIT_OUTPUTS_DIFFER


def _cmd_inspect(args) -> int:
    from .compiler.layer_table import format_table, layer_rows
    from .frontend.onnx_model import load_onnx, parse_shape_overrides, resolve_input_infos, with_static_inputs

    model = load_onnx(args.model)
    shapes = parse_shape_overrides(args.input_shape)
    inputs = resolve_input_infos(model, shapes)
    static = with_static_inputs(model, inputs)
    reports, decisions = {}, None
    if not args.no_passes:
        from .compiler.layer_table import recorded_decisions
        from .frontend.onnx_import import import_onnx
        from .targets.presets import resolve_target

        spec = resolve_target(args.target)
        print(f"target: {spec.name} ({spec.arch})")
        reports, decisions = recorded_decisions(import_onnx(args.model, shapes), spec.tvm_target(), args.target, args.conv_algorithm)
    print(format_table(layer_rows(static, decisions), static))
    for name, stats in reports.items():
        if _worth_a_line({"name": name, **stats}):
            print(_describe_pass({"name": name, **stats}))
    return 0


COMMANDS = {"compile": _cmd_compile, "run": _cmd_run, "bench": _cmd_bench, "tune": _cmd_tune, "inspect": _cmd_inspect}


def main(argv=None) -> int:
    """Entry point of the ``slimtvm`` command; returns the exit status."""
    args = _build_parser().parse_args(argv)
    warnings.showwarning = _one_line_warnings
    try:
        return COMMANDS[args.command](args)
    except SlimError as err:
        print(f"slimtvm: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("slimtvm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`slimtvm inspect … | head`): stop quietly, as Unix tools do
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141
    except OSError as err:  # the file system refused (read-only folder, disk full, a directory in the way)
        where = err.filename2 or err.filename
        print(f"slimtvm: error: {err.strerror or first_line(err)}" + (f": {where}" if where else ""), file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:  # noqa: BLE001 - anything else is slimtvm's bug: say so, keep the traceback
        log = _write_traceback(err)
        print(f"slimtvm: internal error: {first_line(err)} (a bug in slimtvm; full traceback in {log})", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


def _write_traceback(err: BaseException) -> str:
    """Write ``err``'s traceback (with the exceptions it came from) to a new file; its path."""
    import tempfile
    import traceback

    handle, path = tempfile.mkstemp(prefix="slimtvm-internal-error-", suffix=".log")
    with os.fdopen(handle, "w") as log:
        log.write(f"slimtvm {' '.join(sys.argv[1:])}\n\n")
        log.write("".join(traceback.format_exception(err)))
    return path


if __name__ == "__main__":
    sys.exit(main())
