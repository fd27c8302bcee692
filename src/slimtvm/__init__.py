"""slimtvm: compile compressed ONNX networks ahead of time with Apache TVM for x86-64 and aarch64.

Public API::

    artifact = slimtvm.compile("model.onnx", "model.so", target="host")   # needs full apache-tvm
    model = slimtvm.load("model.so")                                     # TVM runtime only
    outputs = model.run({"input": x})

``compile`` is imported lazily so that ``load`` works on a device with only TVM's runtime.
"""

__version__ = "0.1.0"

from .errors import SlimError
from .runtime.artifact import aligned_array
from .runtime.artifact import short_tvm_pool_spin_by_default as _short_tvm_pool_spin_by_default
from .runtime.artifact import use_all_cores_by_default as _use_all_cores_by_default

_use_all_cores_by_default()
_short_tvm_pool_spin_by_default()


def compile(  # noqa: A001 - the natural name
    model,
    output=None,
    target="host",
    input_shapes=None,
    db=None,
    binarize=None,
    sparse="auto",
    prune=None,
    save_onnx=None,
    low_rank=None,
    conv_algorithm="auto",
):
    """Compile an ONNX model into a shared library + manifest; see :func:`slimtvm.compiler.build.compile_model`.

    ``binarize``: None, ``"weights"``, ``"weights+activations"`` or a
    :class:`~slimtvm.compress.binarize_float_layers.BinarizeRequest` (lossy; the error is reported).
    ``prune``: None, a share of weights to prune (global L1 magnitude, as
    ``torch.nn.utils.prune.global_unstructured``) or a
    :class:`~slimtvm.compress.prune_float_layers.PruneRequest` (lossy; the error is reported).
    ``low_rank``: None, a SPEC (``"rank=0.25"``, ``"energy=0.9"``, ``"error=0.05"``, ``"vbmf"``) or a
    :class:`~slimtvm.compress.low_rank_float_layers.LowRankRequest` (lossy; factorised only where
    measured faster; the error is reported).
    ``save_onnx``: a path for the rewritten float model of the lossy step.
    ``sparse``: ``auto`` (sparse kernels where they pay: a measured table, and the convs near its
    thresholds timed both ways on this machine), ``timed`` (every candidate timed), ``always`` or
    ``never``. ``conv_algorithm``: ``auto`` (Winograd for the convs its kernel takes) or ``direct``.
    """
    from .compiler.build import compile_model

    if isinstance(binarize, str):
        from .compress.binarize_float_layers import BinarizeRequest

        binarize = BinarizeRequest(binarize)
    if isinstance(prune, (int, float)):
        from .compress.prune_float_layers import PruneRequest

        prune = PruneRequest(amount=float(prune))
    if isinstance(low_rank, str):
        from .compress.low_rank_float_layers import LowRankRequest

        low_rank = LowRankRequest(low_rank)
    return compile_model(
        model,
        output=output,
        target=target,
        input_shapes=input_shapes,
        db=db,
        binarize=binarize,
        sparse=sparse,
        prune=prune,
        save_onnx=save_onnx,
        low_rank=low_rank,
        conv_algorithm=conv_algorithm,
    )


def tune(model, db, target="host", trials=64, **options):
    """Tune a model's kernels into a database folder; see :func:`slimtvm.tuning.tune.tune_model`.
    Measured on this machine (no ``rpc``/``tracker``), the sparse/dense choice is timed as
    ``compile`` times it."""
    from .compiler.layer_timing import conv_timer, discard_timer
    from .tuning.tune import tune_model

    timer_options = {"conv_algorithm": options.get("conv_algorithm", "auto")}
    timer = None if options.get("rpc") or options.get("tracker") else conv_timer(target, options=timer_options)
    try:
        return tune_model(model, db, target=target, trials=trials, sparse_timer=timer, **options)
    finally:
        discard_timer(timer)


def load(library_path):
    """Load a compiled artifact; see :func:`slimtvm.runtime.artifact.load`."""
    from .runtime.artifact import load as _load

    return _load(library_path)


__all__ = ["SlimError", "aligned_array", "compile", "load", "__version__"]
