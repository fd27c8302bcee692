"""Tensor intrinsics that pack sign bits into bytes with one vector compare and one move-mask per
8 channels (x86 AVX: ``vcmpps`` / ``vpcmpgtd``, then ``vmovmskps``), where the channels lie
contiguous.

The binary conv packs signs as ``byte k = Σ_b (v[8k + b] ≥ 0) << b`` (schedules/
binary_conv_compute.py): its float input (:func:`sign_pack_intrin`), and, writing bits for the
next binary conv, its integer dot products against per-channel thresholds,
``flip·dot ≥ threshold`` (:func:`threshold_pack_intrin`). Written as that sum of selects, LLVM
turned each byte into eight scalar compares and shifts: the input packing was a third of Bi-Real
Net 18's 56×56 binary convs (Zen 5, 1 thread, per kernel: 100 µs, 67 µs with it replaced by one
compare per byte), and the threshold bits a third of the XNOR ResNet-18's 56×56 binary convs
that write bits (94 µs, 64 µs). As a vector compare the byte's bits come out, in order, as a lane
mask. ``_CMP_GE_OQ`` is LLVM's ``fcmp oge``, what the select form compiles to: −0.0 ≥ 0 is true,
NaN ≥ 0 false. The integer compare is the select form's own ``icmp sge`` on the same int32
products, its lanes' all-ones or zero words reinterpreted as floats for the move-mask.

x86 only: ``llvm.x86.avx.*`` exist on every AVX2 and AVX-512 target; NEON keeps the select form.
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func

BITS = 8  # channels per packed byte
GE_ORDERED_QUIET = 29  # _CMP_GE_OQ: the predicate of LLVM's fcmp oge
READ_ORDER = (2, 0, 1)  # threshold, dots, flip: ``flip·dot ≥ threshold`` is stored as ``threshold ≤ dot·flip``


def packed_byte(bit_is_set):
    """``Σ_b bit_is_set(b) << b`` over the 8 bits of a byte, as a uint8 expression: the form the
    packing computes and these intrinsics' descriptions share (tensorize matches them)."""
    value = None
    for bit in range(BITS):
        term = tirx.if_then_else(bit_is_set(bit), tirx.const(1 << bit, "uint8"), tirx.const(0, "uint8"))
        value = term if value is None else value | term
    return value


def sign_byte(value_of):
    """The byte of ``value_of(b) ≥ 0`` for float values."""
    return packed_byte(lambda bit: value_of(bit) >= tirx.const(0.0, "float32"))


def threshold_byte(dot_of, flip_of, threshold_of):
    """The byte of ``flip·dot ≥ threshold`` in int32 (binary_thresholds.py's form)."""
    return packed_byte(lambda bit: dot_of(bit).astype("int32") * flip_of(bit) >= threshold_of(bit))


def sign_pack_intrin(lanes: int) -> str:
    """The registered name of the intrinsic packing ``lanes`` contiguous floats (a multiple of 8)
    into ``lanes / 8`` bytes (registered on first use): ``A`` float32 ``[lanes]`` → ``C`` uint8
    ``[lanes / 8]``, both contiguous."""
    _check(lanes)
    name = f"slimtvm_sign_pack_{lanes}"
    if TensorIntrin.get(name, allow_missing=True) is None:
        inputs = [("A", "float32")]
        TensorIntrin.register(
            name,
            _description(lanes, inputs, lambda A, base: sign_byte(lambda bit: A[base + bit])),
            _implementation(lanes, inputs, _float_lanes_at_least_zero),
        )
    return name


def threshold_pack_intrin(lanes: int, dot_dtype: str) -> str:
    """The registered name of the intrinsic packing ``flip·dot ≥ threshold`` of ``lanes``
    contiguous channels (a multiple of 8) into bytes: ``D`` ``dot_dtype`` (int16 / int32),
    ``F`` and ``T`` int32, ``[lanes]`` each → ``C`` uint8 ``[lanes / 8]``."""
    _check(lanes)
    name = f"slimtvm_threshold_pack_{lanes}_{dot_dtype}"
    if TensorIntrin.get(name, allow_missing=True) is None:
        inputs = [("D", dot_dtype), ("F", "int32"), ("T", "int32")]
        TensorIntrin.register(
            name,
            _description(
                lanes, inputs, lambda D, F, Th, base: threshold_byte(lambda b: D[base + b], lambda b: F[base + b], lambda b: Th[base + b]), READ_ORDER
            ),
            _implementation(lanes, inputs, _products_at_least_thresholds, READ_ORDER),
        )
    return name


def _check(lanes: int) -> None:
    if lanes % BITS or lanes <= 0:
        raise ValueError(f"sign packing needs whole bytes of channels, not {lanes} lanes")


def _buffers(lanes: int, inputs: list):
    handles = [T.arg(name.lower(), T.handle()) for name, _ in inputs] + [T.arg("c", T.handle())]
    sources = [T.match_buffer(handle, (lanes,), dtype, offset_factor=1) for handle, (_, dtype) in zip(handles, inputs)]
    return sources, T.match_buffer(handles[-1], (lanes // BITS,), "uint8", offset_factor=1)


def _description(lanes: int, inputs: list, byte_at, read_order: tuple = (0,)):
    """``C[k] = byte_at(*sources, 8k)`` for each byte k, as a loop of blocks (one byte: the unit
    loop tensorize finds there, around a block without variables). ``read_order``: the sources
    in the order the workload's block lists its reads (that of their first load in the
    expression, where ``a ≥ b`` is stored as ``b ≤ a``), which tensorize compares."""
    with IRBuilder() as builder:
        with build_prim_func():
            T.func_name("description")
            sources, C = _buffers(lanes, inputs)
            ordered = [sources[i] for i in read_order]
            with T.sblock("root"):
                T.reads(*(source[0:lanes] for source in ordered))
                T.writes(C[0 : lanes // BITS])
                if lanes == BITS:
                    with T.serial(1):
                        with T.sblock("packed_byte"):
                            T.reads(*(source[0:BITS] for source in ordered))
                            T.writes(C[0])
                            T.buffer_store(C, byte_at(*sources, 0), [0])
                else:
                    with T.serial(lanes // BITS) as k:
                        with T.sblock("packed_byte"):
                            vk = T.axis.spatial(lanes // BITS, k)
                            T.reads(*(source[vk * BITS : vk * BITS + BITS] for source in ordered))
                            T.writes(C[vk])
                            T.buffer_store(C, byte_at(*sources, vk * BITS), [vk])
    return builder.get()


def _implementation(lanes: int, inputs: list, lane_mask, read_order: tuple = (0,)):
    """``C[k]`` = the move-mask of ``lane_mask(*sources, 8k)`` (8 float lanes, sign bit set
    where the bit is 1), unrolled over the bytes; reads listed as the description lists them
    (tensorize pairs the two functions' buffers by them)."""
    with IRBuilder() as builder:
        with build_prim_func():
            T.func_name("implementation")
            sources, C = _buffers(lanes, inputs)
            with T.sblock("root"):
                T.reads(*(sources[i][0:lanes] for i in read_order))
                T.writes(C[0 : lanes // BITS])
                for k in range(lanes // BITS):
                    mask = T.call_llvm_pure_intrin("int32", "llvm.x86.avx.movmsk.ps.256", lane_mask(*sources, k * BITS))
                    T.buffer_store(C, mask.astype("uint8"), [k])
    return builder.get()


def _float_lanes_at_least_zero(A, base):
    zeros = tirx.Broadcast(tirx.const(0.0, "float32"), BITS)
    predicate = tirx.const(GE_ORDERED_QUIET, "int8")
    return T.call_llvm_pure_intrin("float32x8", "llvm.x86.avx.cmp.ps.256", A.vload([base], "float32x8"), zeros, predicate)


def _products_at_least_thresholds(D, F, Th, base):
    # threshold ≤ product as 0 / 1 lanes, negated to 0 / all ones (LLVM: one vpcmpgtd); written as
    # a Select on the comparison, tensorize failed to rebuild the int16 load's cast (TVM 0.27)
    products = D.vload([base], f"{D.dtype}x{BITS}").astype(f"int32x{BITS}") * F.vload([base], f"int32x{BITS}")
    at_least = tirx.Cast(f"int32x{BITS}", tirx.LE(Th.vload([base], f"int32x{BITS}"), products))
    return T.reinterpret(f"float32x{BITS}", at_least * tirx.Broadcast(tirx.const(-1, "int32"), BITS))
