"""slimtvm's graph passes (Relax → Relax), in order, as instances whose reports can be read."""

from __future__ import annotations

from dataclasses import dataclass, field

from .canonical_sign import CanonicalizeSign
from .channel_broadcasts import ChannelBroadcasts
from .channels_first import ChannelsFirst
from .conv3d_as_conv2d import Conv3dAsConv2d
from .detect_binary import DetectBinaryLayers
from .detect_sparse import DetectSparsity
from .fold_batchnorm import FoldBatchNorm
from .fold_constants import FoldConstantsSafely
from .matmul_rows import MatmulRows
from .padding_taps import PaddingTaps
from .rank_matched_constants import RankMatchedConstants
from .remove_dead_channels import RemoveDeadChannels
from .remove_dropout import RemoveDropout
from .scalar_min_max import ScalarMinMaxAsOps
from .split_batch import SplitBatch


@dataclass
class GraphPasses:
    """The graph passes of one compile; :meth:`reports` reads them after a run."""

    fold_batchnorm: FoldBatchNorm = field(default_factory=FoldBatchNorm)
    binarize: DetectBinaryLayers = field(default_factory=DetectBinaryLayers)
    sparsity: DetectSparsity = field(default_factory=DetectSparsity)
    dead_channels: RemoveDeadChannels = field(default_factory=RemoveDeadChannels)
    split_batch: SplitBatch = field(default_factory=SplitBatch)
    channels_first: ChannelsFirst = field(default_factory=ChannelsFirst)
    conv3d: Conv3dAsConv2d = field(default_factory=Conv3dAsConv2d)
    padding_taps: PaddingTaps = field(default_factory=PaddingTaps)
    matmul_rows: MatmulRows = field(default_factory=MatmulRows)

    def sequence(self) -> list:
        return [
            FoldConstantsSafely(),  # weights computed in the graph become constants
            self.channels_first,  # Linear layers on channels-last stretches → 1×1 convs in NCHW
            RankMatchedConstants(),  # x · c[C,1,1] → x · c[1,C,1,1]: layouts pass through it
            ChannelBroadcasts(),  # x[1,C,H,W] · g[1,1,H,W] → x · broadcast_to(g): layouts pass through it
            RemoveDropout(),
            ScalarMinMaxAsOps(),  # Clip kernels back to ops, so that layouts pass through them
            CanonicalizeSign(),  # where(x ≥ 0, 1, −1) → sign(sign(x) + 0.5): layouts pass through it
            self.fold_batchnorm,
            FoldConstantsSafely(),
            self.conv3d,  # after folding: conv weights are constants by now
            self.padding_taps,
            self.matmul_rows,
            self.binarize,  # after folding: in-graph weight binarization is constant by now
            self.sparsity,  # after folding: weight_orig · weight_mask is one constant by now
            self.dead_channels,  # after the report of the model's own zeros
            FoldConstantsSafely(),  # a layer left with only constant inputs is a constant now
            self.split_batch,  # last: every rewrite above sees the batch once
        ]

    def reports(self) -> dict:
        """Statistics of each pass after a run, keyed by pass name (for the manifest)."""
        return {  # fold_batchnorm first: the manifest's "passes"[0] since format 1
            "fold_batchnorm": self.fold_batchnorm.report.to_json(),
            "binarize": self.binarize.report.to_json(),
            "sparsity": self.sparsity.report.to_json(),
            "dead_channels": self.dead_channels.report.to_json(),
            "split_batch": self.split_batch.report.to_json(),
            "conv3d_as_conv2d": {"rewritten": self.conv3d.rewritten},
            "matmul_rows": {"rewritten": self.matmul_rows.rewritten},
            "padding_taps": {
                "convs_cropped": self.padding_taps.cropped,
                "taps_removed": self.padding_taps.taps_removed,
                "convs_in_regions": self.padding_taps.split,
            },
            "channels_first": {
                "stretches": self.channels_first.stretches,
                "matmuls_as_convs": self.channels_first.matmuls,
                "matmul_positions": list(self.channels_first.positions),
            },
        }
