"""Named compilation targets: ``host``, ``x86-64``, ``x86-64-avx512``, ``x86-64-avx512-vpopcnt``, ``aarch64``, or TVM target JSON.

A preset resolves to a :class:`TargetSpec`: the TVM target (dict form; TVM 0.27 rejects
``-mtriple`` strings), the CPU architecture of the code it produces (as ``platform.machine()``
names it) and the C++ compiler that links the shared library.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field

from ..errors import SlimError, first_line

PRESET_NAMES = ("host", "x86-64", "x86-64-avx512", "x86-64-avx512-vpopcnt", "aarch64")


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: what to give TVM, which architecture, which linker."""

    name: str
    config: dict
    arch: str  # "x86_64" or "aarch64"
    cross_compiler: str | None = None  # None: TVM's default host compiler
    notes: tuple = field(default_factory=tuple)

    def tvm_target(self):
        """The ``tvm.target.Target`` for this spec (imports TVM's compiler)."""
        import tvm

        return tvm.target.Target(self.config)


def host_arch() -> str:
    """The architecture of this machine, normalised to ``x86_64`` or ``aarch64``."""
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _host_cpu_name() -> str:
    """LLVM's name for this CPU (e.g. ``znver3``), detected by TVM's bundled LLVM."""
    import tvm

    detect = tvm.get_global_func("target.llvm_get_system_cpu", allow_missing=True)
    name = str(detect()) if detect is not None else ""
    return name if name and name != "generic" else ""


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _x86_config(mcpu: str | None, mattr: list[str] | None = None) -> dict:
    config = {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "num-cores": _cpu_count()}
    if mcpu:
        config["mcpu"] = mcpu
    if mattr:
        config["mattr"] = mattr
    return config


def _aarch64_config() -> dict:
    return {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}


def resolve_target(target: str | dict | None) -> TargetSpec:
    """Resolve a preset name, a TVM target JSON string or a target dict to a :class:`TargetSpec`.

    Refuses (``SlimError``) an unknown preset name, malformed JSON, a target TVM rejects, and
    non-CPU targets (slimtvm produces CPU code only).
    """
    if target is None or target == "host":
        return _host_spec()
    if isinstance(target, str) and target in PRESET_NAMES:
        return _preset_spec(target)
    if isinstance(target, str):
        text = target.strip()
        if not text.startswith("{"):
            raise SlimError(
                f"unknown target {target!r}: use one of {', '.join(PRESET_NAMES)} or a TVM target as JSON"
                ' (e.g. \'{"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}\')'
            )
        try:
            config = json.loads(text)
        except json.JSONDecodeError as err:
            raise SlimError(f"target JSON is malformed: {err}") from None
    elif isinstance(target, dict):
        config = dict(target)
    else:
        raise SlimError(f"target must be a preset name, JSON text or a dict, not {type(target).__name__}")
    return _custom_spec(config)


def _host_spec() -> TargetSpec:
    arch = host_arch()
    if arch == "x86_64":
        cpu = _host_cpu_name()
        # AMD's SSE4a: LLVM builds small byte shuffles with its non-VEX ``insertq``, which stalls
        # between AVX instructions (an 8 × 8 byte transpose ran 2.1x slower with it on Zen 2).
        return TargetSpec("host", _x86_config(cpu, ["-sse4a"] if cpu.startswith(AMD_SSE4A_CPUS) else None), "x86_64")
    if arch == "aarch64":
        config = _aarch64_config()
        cpu = _host_cpu_name()
        if cpu:
            config["mcpu"] = cpu
        return TargetSpec("host", config, "aarch64")
    raise SlimError(f"unsupported host architecture {arch!r}: slimtvm targets x86_64 and aarch64")


def _preset_spec(name: str) -> TargetSpec:
    arch = host_arch()
    if name == "x86-64":
        # A portable x86-64 build: AVX2 + FMA (Haswell and later, Zen and later).
        spec = TargetSpec(name, _x86_config("haswell"), "x86_64")
    elif name == "x86-64-avx512":
        spec = TargetSpec(name, _x86_config("skylake-avx512"), "x86_64")
    elif name == "x86-64-avx512-vpopcnt":
        # AVX-512 with VPOPCNTDQ and BITALG (Ice Lake and later, Zen 4 and later): the binary
        # kernels' byte popcounts become single vpopcntb instructions.
        spec = TargetSpec(name, _x86_config("icelake-server"), "x86_64")
    else:  # aarch64
        spec = TargetSpec(name, _aarch64_config(), "aarch64")
    if spec.arch != arch:
        from .toolchain import cross_compiler_for

        spec = TargetSpec(spec.name, spec.config, spec.arch, cross_compiler_for(spec.arch))
    return spec


def _custom_spec(config: dict) -> TargetSpec:
    import tvm

    kind = config.get("kind")
    if kind != "llvm":
        raise SlimError(f"target kind {kind!r} is not supported: slimtvm compiles for CPUs (kind 'llvm')")
    try:
        tvm.target.Target(config)
    except Exception as err:  # TVM raises ValueError/TVMError with long texts
        raise SlimError(f"TVM rejects the target {json.dumps(config)}: {first_line(err)}") from None
    triple = str(config.get("mtriple", ""))
    _check_cpu_name(config, triple)
    if triple.startswith("aarch64") or triple.startswith("arm64"):
        arch = "aarch64"
    elif triple == "" or triple.startswith("x86_64"):
        arch = "x86_64" if triple else host_arch()
    else:
        raise SlimError(f"target triple {triple!r} is not supported: slimtvm targets x86_64 and aarch64")
    cross = None
    if arch != host_arch():
        from .toolchain import cross_compiler_for

        cross = cross_compiler_for(arch)
    return TargetSpec("custom", config, arch, cross)


def _check_cpu_name(config: dict, triple: str) -> None:
    """Refuse an ``mcpu`` LLVM does not know for the triple (LLVM itself only prints warnings
    and compiles for a generic CPU), naming the valid ones."""
    import tvm
    from tvm.target import codegen

    mcpu = config.get("mcpu")
    if not mcpu:
        return
    triple = triple or str(codegen.llvm_get_system_triple())
    if codegen.llvm_is_valid_cpu(str(mcpu), triple):
        return
    names = sorted({str(name) for name in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))})
    raise SlimError(f"mcpu {mcpu!r} is not a CPU LLVM knows for {triple}; valid names: {', '.join(names)}")


def simd_lanes(target) -> int:
    """fp32 lanes of the target's widest vector unit: 16 (AVX-512), 8 (AVX2), 4 (NEON / SSE)."""
    mcpu = str(target.attrs.get("mcpu", "")) if hasattr(target, "attrs") else ""
    mattr = [str(a) for a in target.attrs.get("mattr", [])] if hasattr(target, "attrs") else []
    triple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else ""
    if triple.startswith("aarch64") or triple.startswith("arm"):
        return 4
    if "+avx512f" in mattr or "avx512" in mcpu or mcpu in AVX512_CPUS:
        return 16
    return 8


def avx512_in_halves(target) -> bool:
    """Whether the target's 16-lane instructions run as two 8-lane halves (Zen 4's 256-bit
    datapaths, :data:`HALF_WIDTH_AVX512_CPUS`): 8-lane vectors then cost no more per float."""
    mcpu = str(target.attrs.get("mcpu", "")) if hasattr(target, "attrs") else ""
    return simd_lanes(target) == 16 and mcpu in HALF_WIDTH_AVX512_CPUS


def popcount_by_table(target) -> bool:
    """Whether the binary convs count bits with AVX2 ``vpshufb`` tables (schedules/
    binary_conv_compute.py): x86 targets with AVX2 and without AVX-512 BITALG, whose
    ``vpopcntb`` is faster still. aarch64 has a byte popcount (``cnt``)."""
    from tvm.target import codegen

    triple = str(target.attrs.get("mtriple", "")) if hasattr(target, "attrs") else ""
    if not triple.startswith("x86_64"):
        return False
    return bool(codegen.target_has_features("avx2", target)) and not bool(codegen.target_has_features("avx512bitalg", target))


# AVX-512 CPUs whose 512-bit FMAs issue as two 256-bit halves: Zen 4 (Zen 5's server and desktop
# parts have full-width units; LLVM names both generations of Zen 5 alike)
HALF_WIDTH_AVX512_CPUS = ("znver4",)

AMD_SSE4A_CPUS = ("znver", "bdver", "btver", "amdfam10", "barcelona")

# LLVM CPU names with AVX-512F (the presets and common server/desktop parts)
AVX512_CPUS = {
    "skylake-avx512",
    "cascadelake",
    "cooperlake",
    "icelake-server",
    "icelake-client",
    "tigerlake",
    "sapphirerapids",
    "emeraldrapids",
    "graniterapids",
    "znver4",
    "znver5",
    "rocketlake",
    "cannonlake",
}
