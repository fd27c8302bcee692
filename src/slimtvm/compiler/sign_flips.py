"""Compare a binarized network with a reference engine, allowing only sign flips at rounding distance.

A pre-Sign value that both engines compute in float can land within rounding distance of 0, and
then its sign may differ (float sums are added in another order); everything after it differs
too. Rather than loosen the tolerance, :func:`with_sign_inputs_as_outputs` makes every activation
Sign's input an extra graph output (a *probe* build), and :func:`compare_with_sign_flips` checks
that every sign that differs comes from a value within ``flip_distance`` (relative) of 0, and that
the real outputs agree to ``tolerance`` whenever no sign may differ. The outputs compared should
come from a build of the unchanged model too: extra outputs change which layers fuse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..runtime.bench import relative_difference

BINARIZERS = ("Sign", "BipolarQuant")  # BipolarQuant: QONNX's (Brevitas' binary quantizers)


def with_sign_inputs_as_outputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list]:
    """(a copy that also outputs the value each activation Sign binarizes, their names).

    Weights' Signs (values computed from constants only) are skipped. Where a layout
    ``Transpose`` feeds the Sign (tf2onnx exports), the tensor before it is the one output, so
    that the transpose pair around the binarizer stays removable and the layer stays binary."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    produced_by_constants = {init.name for init in copy.graph.initializer}
    for node in copy.graph.node:  # values computed from constants only (in-graph weight binarization)
        if all(name in produced_by_constants or name == "" for name in node.input):
            produced_by_constants.update(node.output)
    producer = {out: node for node in copy.graph.node for out in node.output}
    inner_signs = {node.output[0] for node in copy.graph.node if node.op_type == "Sign"}
    names = []
    for node in copy.graph.node:
        if node.op_type not in BINARIZERS or node.input[0] in produced_by_constants:
            continue
        source = node.input[0]
        before = producer.get(source)
        if before is not None and before.op_type == "Add" and any(name in inner_signs for name in before.input):
            continue  # the outer Sign of sign(sign(x) + c): its inner Sign is the one that binarizes
        while source in producer and producer[source].op_type == "Transpose":
            source = producer[source].input[0]
        if source not in names and source not in {value.name for value in copy.graph.input}:
            names.append(source)
    existing = {value.name for value in copy.graph.output}
    for name in names:
        if name not in existing:
            copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy, names


@dataclass
class SignFlipComparison:
    flips: int  # pre-Sign values whose sign differs between the engines (all near 0, else in far_flips)
    near_zero: int  # reference pre-Sign values within the flip distance of 0 (a sign there may differ)
    far_flips: list  # names of pre-Sign values whose sign differs further from 0 than allowed
    differences: dict  # output name -> relative difference
    probed: bool = True  # whether ours held every pre-Sign value (else flips are unknown: near_zero stands for them)
    flipped_first: str = ""  # the first pre-Sign value (graph order) with a flip: the ones after it compute from other signs

    @property
    def strict(self) -> bool:
        """Whether the outputs must agree: no sign differs (or, unprobed, none can)."""
        return self.flips == 0 and (self.probed or self.near_zero == 0)

    def agrees(self, tolerance: float) -> bool:
        """No flip far from 0, and the outputs within ``tolerance`` when compared strictly."""
        return not self.far_flips and (not self.strict or all(d <= tolerance for d in self.differences.values()))


def compare_with_sign_flips(ours: dict, reference: dict, sign_inputs: list, outputs: list, flip_distance: float = 1e-5) -> SignFlipComparison:
    """Compare ``outputs`` of two runs (name → array). ``reference`` must hold the pre-Sign values
    ``sign_inputs`` (in graph order, as :func:`with_sign_inputs_as_outputs` lists them); ``ours``
    may (a probe build), else only the reference's values near 0 are counted. A sign may differ
    only where the reference value is within ``flip_distance`` times that tensor's largest
    magnitude of 0. Once a tensor has a sign flipped, the engines binarize different values and
    every later pre-Sign value may differ anywhere: those are not held to the distance (a BNN
    cascades one rounding flip into flips far from 0 in the blocks after it). The outputs must
    agree when no sign differs (when ``ours`` lacks the pre-Sign values: when no reference value
    is that close to 0)."""
    flips, near, far, first = 0, 0, [], ""
    for name in sign_inputs:
        values = reference[name]
        scale = float(np.abs(values).max()) or 1.0
        close = np.abs(values) <= flip_distance * scale
        near += int(close.sum())
        if name in ours:
            differs = np.sign(ours[name]) != np.sign(values)  # a 0 on one side only counts too (ONNX's Sign(0) is 0)
            if not first and (differs & ~close).any():
                far.append(name)
            flips += int(differs.sum())
            first = first or (name if differs.any() else "")
    probed = all(name in ours for name in sign_inputs)
    return SignFlipComparison(flips, near, far, {name: relative_difference(ours[name], reference[name]) for name in outputs}, probed, first)


@dataclass
class ExactnessTally:
    """Comparisons of a probe build and a plain build over many inputs, summed up for a report."""

    tolerance: float = 1e-4
    inputs: int = 0
    strict: int = 0  # inputs whose signs all agreed in the probe build (outputs compared strictly)
    flipped: int = 0  # inputs with a sign flipped at rounding distance of 0
    near: int = 0  # inputs with a reference pre-Sign value that close to 0
    worst: float = 0.0  # largest relative difference over the strict inputs
    failures: list = None  # (input index, comparison) of every comparison that did not agree

    def add(self, probe: SignFlipComparison, plain: SignFlipComparison) -> None:
        """One input: the probe build's comparison and the plain build's."""
        self.failures = self.failures or []
        self.failures += [(self.inputs, checked) for checked in (probe, plain) if not checked.agrees(self.tolerance)]
        self.inputs += 1
        self.near += plain.near_zero > 0
        self.flipped += probe.flips > 0
        if probe.strict:
            self.strict += 1
            self.worst = max(self.worst, *probe.differences.values(), *plain.differences.values())

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return (
            f"on {self.inputs} random inputs: max relative difference {self.worst:.1e} over the {self.strict} inputs whose signs all agree; "
            f"{self.flipped} with signs flipped at rounding distance of 0 (and {self.near} with a value that close); {len(self.failures or [])} disagreements"
        )
