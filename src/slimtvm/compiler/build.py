"""ONNX → artifact: frontend, slimtvm graph passes, TVM lowering, export, manifest.

Writes ``OUT.so`` and ``OUT.json`` atomically (temporary files renamed into place), so a failed or
interrupted compile leaves no partial artifact and never damages an existing one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from .. import __version__
from ..atomic_files import check_writable_folder, replace_together, staging_path
from ..errors import InternalError, SlimError, first_line
from ..frontend.onnx_import import import_onnx
from ..lowering.sparse_layers import SPARSE_MODES
from ..lowering.winograd_layers import CONV_ALGORITHMS
from ..runtime.manifest import MANIFEST_FORMAT, manifest_path_for, sha256_of_file
from ..targets.presets import TargetSpec, resolve_target
from .layer_timing import conv_timer, discard_timer
from .pipeline import pipeline_for


@dataclass
class Artifact:
    """A compiled model on disk: the shared library and its manifest."""

    library_path: str
    manifest: dict

    @property
    def manifest_path(self) -> str:
        return manifest_path_for(self.library_path)

    def load(self):
        """Load the library into this process (refuses one built for another architecture)."""
        from ..runtime.artifact import load

        return load(self.library_path)


def compile_model(
    model,
    output: str | None = None,
    target="host",
    input_shapes: dict | None = None,
    db: str | None = None,
    binarize=None,
    sparse: str = "auto",
    prune=None,
    save_onnx: str | None = None,
    low_rank=None,
    conv_algorithm: str = "auto",
) -> Artifact:
    """Compile an ONNX model (path or ``ModelProto``) into ``output`` (``.so``) and its manifest.

    ``target`` is a preset name (``host``, ``x86-64``, ``x86-64-avx512``, ``aarch64``), TVM target
    JSON, or a dict. ``input_shapes`` maps input names to static shapes and is required for inputs
    with dynamic dimensions. With ``output=None`` the artifact goes to a new temporary folder.
    ``binarize`` (a :class:`~slimtvm.compress.binarize_float_layers.BinarizeRequest`) binarizes float
    layers first (lossy) and records the measured error in the manifest; ``prune`` (a
    :class:`~slimtvm.compress.prune_float_layers.PruneRequest`) prunes them (lossy, reported the
    same way); ``low_rank`` (a :class:`~slimtvm.compress.low_rank_float_layers.LowRankRequest`)
    factorises them (lossy, reported; the speed gate times layers on the target). ``save_onnx``:
    where to write the rewritten float model of the lossy step
    (onnxruntime runs it, and the artifact matches it), written only when the compile succeeds. ``sparse`` (see
    :data:`slimtvm.lowering.sparse_layers.SPARSE_MODES`): which convs with zero weights run the
    sparse kernel — ``auto`` (where it pays: a measured table, and convs near its thresholds
    timed both ways when the target runs here), ``timed`` (every one the kernel takes timed both
    ways; refused for a target that does not run here), ``always`` (every one the kernel takes) or
    ``never``. ``conv_algorithm`` (see :data:`slimtvm.lowering.winograd_layers.CONV_ALGORITHMS`):
    ``auto`` runs the convs the Winograd kernel takes on it, ``direct`` every float conv on the
    direct kernel (the low-rank speed gate and the sparse timing then compare against it too).

    Refuses (``SlimError``) bad models, unknown targets, a missing or foreign or damaged tuning
    database, a missing cross compiler, an output path
    in a folder that does not exist, and anything TVM cannot compile, leaving no output file.
    """
    started = time.perf_counter()
    spec = resolve_target(target)
    output = _output_path(output)
    if sparse not in SPARSE_MODES:
        raise SlimError(f"sparse mode {sparse!r}: use one of {', '.join(SPARSE_MODES)}")
    if conv_algorithm not in CONV_ALGORITHMS:
        raise SlimError(f"conv algorithm {conv_algorithm!r}: use one of {', '.join(CONV_ALGORITHMS)}")
    build_options = {"conv_algorithm": conv_algorithm} if conv_algorithm != "auto" else {}
    lossy = [flag for flag, request in (("--binarize", binarize), ("--prune", prune), ("--low-rank", low_rank)) if request is not None]
    if len(lossy) > 1:
        raise SlimError(f"{' and '.join(lossy)} together are not supported: run one with --save-onnx, then compile the saved model with the next")
    if save_onnx is not None:
        if not lossy:
            raise SlimError("--save-onnx writes the model that --prune, --binarize or --low-rank rewrote; none was asked for")
        if not str(save_onnx).endswith(".onnx"):
            raise SlimError(f"--save-onnx {save_onnx} must end in .onnx")
        check_writable_folder(os.fspath(save_onnx), "--save-onnx")
        if os.path.isdir(save_onnx):
            raise SlimError(f"--save-onnx {save_onnx} is a directory")
    request_report = request_key = None
    if binarize is not None:
        from ..compress.binarize_float_layers import apply_request

        model, request_report = apply_request(model, binarize, input_shapes)
        request_key = "binarize_request"
    elif prune is not None:
        from ..compress.prune_float_layers import apply_request as apply_prune

        model, request_report = apply_prune(model, prune, input_shapes)
        request_key = "prune_request"
    elif low_rank is not None:
        from ..compress.low_rank_float_layers import apply_request as apply_low_rank
        from .layer_timing import layer_timer

        model, request_report = apply_low_rank(model, low_rank, input_shapes, layer_timer(target, options=build_options) if low_rank.speed_gate else None)
        request_key = "low_rank_request"
    frontend = import_onnx(model, input_shapes)
    database = None
    if db is not None:
        from ..tuning.database import open_database

        database = open_database(os.fspath(db), spec, create=False)
    tvm_target = spec.tvm_target()
    timer = conv_timer(target, options=build_options) if sparse in ("auto", "timed") else None
    if sparse == "timed" and timer is None:
        raise SlimError(f"--sparse timed times kernels on this machine, and target {spec.name} does not run here: use --sparse auto (the table)")
    try:
        pipeline = pipeline_for(tvm_target, sparse=sparse, timer=timer, conv_algorithm=conv_algorithm)
        executable, pass_seconds, lower_seconds = _lower(frontend.mod, tvm_target, pipeline, database)
    finally:
        discard_timer(timer)
    manifest = {
        "format": MANIFEST_FORMAT,
        "slimtvm_version": __version__,
        "tvm_version": _tvm_version(),
        "model": {"source": model if isinstance(model, (str, os.PathLike)) else "<in-memory ModelProto>", "sha256": frontend.model_sha256},
        "inputs": [info.to_json() for info in frontend.inputs],
        "outputs": [info.to_json() for info in frontend.outputs],
        "target": {"preset": spec.name, "arch": spec.arch, "tvm": spec.config, "linker": spec.cross_compiler or "host default"},
        "conv_algorithm": conv_algorithm,
        "passes": [{"name": name, **stats} for name, stats in pipeline.reports().items()],
        "layers": [record.to_json() for record in pipeline.layer_records],
        "warnings": list(frontend.warnings),
        "onnx_rewrites": dict(frontend.rewrites),
        "library": {"file": os.path.basename(output)},
    }
    if request_report is not None:
        manifest[request_key] = request_report.to_json()
        if save_onnx is not None:
            manifest[request_key]["saved_onnx"] = os.path.abspath(save_onnx)
    if database is not None:
        manifest["tuning"] = {"database": os.path.abspath(database.path), "records": database.record_count, "tuned_kernels": database.applied}
    export_started = time.perf_counter()
    workdir = tempfile.mkdtemp(prefix="slimtvm-export-")
    try:
        library = _link(executable, os.path.join(workdir, "model.so"), spec)
        manifest["library"]["sha256"] = sha256_of_file(library)
        manifest["library"]["bytes"] = os.path.getsize(library)
        manifest["timings_seconds"] = {
            "passes": round(pass_seconds, 3),
            "lowering": round(lower_seconds, 3),
            "export": round(time.perf_counter() - export_started, 3),
            "total": round(time.perf_counter() - started, 3),
        }
        extra = {os.fspath(save_onnx): model.SerializeToString()} if save_onnx is not None else {}
        _write_pair(library, json.dumps(manifest, indent=2, default=str) + "\n", output, extra)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    return Artifact(output, manifest)


def _output_path(output: str | None) -> str:
    """The checked output path, before any work: refuses a missing or read-only folder, a
    directory as the library or manifest path, and a name without ``.so``."""
    if output is None:
        return os.path.join(tempfile.mkdtemp(prefix="slimtvm-"), "model.so")
    output = os.fspath(output)
    check_writable_folder(output, "output")
    if not output.endswith(".so"):
        raise SlimError(f"output path {output} must end in .so (the manifest goes beside it as .json)")
    for path in (output, manifest_path_for(output)):
        if os.path.isdir(path):
            raise SlimError(f"output path {path} is a directory; the artifact needs it as a file")
    return output


def _lower(mod, tvm_target, pipeline, database=None):
    """(executable, graph-pass seconds, lowering seconds). A failure is slimtvm's own
    (:class:`InternalError`) when plain TVM compiles the same imported module, else the model's
    (:class:`SlimError`: TVM cannot compile it either)."""
    import tvm

    imported = mod
    with tvm_target:
        t0 = time.perf_counter()
        try:
            mod = tvm.transform.Sequential(pipeline.graph.sequence())(mod)
            t1 = time.perf_counter()
            lowering = pipeline.lowering.to_kernels() + pipeline.lowering.to_code(tvm_target, database)
            executable = tvm.compile(mod, target=tvm_target, relax_pipeline=tvm.transform.Sequential(lowering))
        except SlimError:
            raise
        except Exception as err:
            _blame(imported, tvm_target, err)
    return executable, t1 - t0, time.perf_counter() - t1


def _blame(imported, tvm_target, err: Exception):
    """Raise the right error for ``err`` from slimtvm's pipeline: compile ``imported`` with plain
    TVM; if that works, slimtvm is at fault."""
    import tvm

    try:
        tvm.compile(imported, target=tvm_target)
    except Exception as plain_err:  # noqa: BLE001 - TVM's own failure on this model
        raise SlimError(f"TVM cannot compile this model (plain TVM fails too): {type(plain_err).__name__}: {first_line(plain_err)}") from None
    raise InternalError(f"slimtvm's pipeline failed on a model plain TVM compiles: {type(err).__name__}: {first_line(err)}") from err


def _link(executable, path: str, spec: TargetSpec) -> str:
    """Export the library to ``path`` (a scratch folder) with the target's linker; ``path``."""
    from tvm.support import cc

    from ..runtime.claiming_pool import object_file

    pool = [object_file(spec.cross_compiler or cc.get_cc())]  # slimtvm's parallel launch (runtime/claiming_pool.py)
    try:
        if spec.cross_compiler:
            executable.export_library(path, fcompile=cc.cross_compiler(spec.cross_compiler), addons=pool)
        else:
            executable.export_library(path, addons=pool)
    except Exception as err:
        raise SlimError(f"linking the shared library failed: {first_line(err)}") from None
    return path


def _write_pair(library: str, manifest_text: str, output: str, extra: dict | None = None) -> None:
    """Put the library and its manifest at ``output`` and beside it, both or neither (and the
    ``extra`` files, ``{path: bytes}``, such as ``--save-onnx``'s model, with them): all are staged
    beside their destinations, then moved together, so a previous artifact stays whole on any
    failure. An OSError becomes one line naming the path."""
    staged = {}
    try:
        for path, data in (extra or {}).items():
            staged[path] = staging_path(path)
            with open(staged[path], "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        staged[output] = staging_path(output)
        shutil.copyfile(library, staged[output])
        staged[manifest_path_for(output)] = staging_path(manifest_path_for(output))
        with open(staged[manifest_path_for(output)], "w", encoding="utf-8") as handle:
            handle.write(manifest_text)
            handle.flush()
            os.fsync(handle.fileno())
        replace_together(staged)
    except OSError as err:
        for path in staged.values():
            with contextlib.suppress(OSError):
                os.remove(path)
        raise SlimError(f"cannot write the artifact at {output}: {err.strerror or err}") from None


def _tvm_version() -> str:
    import tvm

    return str(tvm.__version__)
