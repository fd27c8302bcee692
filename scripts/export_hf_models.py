"""Export Hugging Face transformers models (random weights) to ONNX with both of torch's exporters.

    .venv/bin/pip install -e '.[hf]'                                # torch and transformers (once)
    .venv/bin/python scripts/export_hf_models.py OUT_DIR [--tiny] [--only NAME,...] [--exporter dynamo,script]

Writes ``NAME_dynamo.onnx`` (``torch.onnx.export(..., dynamo=True)``, opset 18: torch.export
and onnxscript, torch's default since 2.9) and ``NAME_script.onnx`` (``dynamo=False``, opset 17:
the TorchScript tracer) for each model, built from its ``transformers`` config class with random
weights (the configs need no download), in eval mode, batch 1. The two exporters write the same
network in different operator forms — the reason to test both: scaled dot-product attention as
``Where(IsNaN(softmax))`` guards and per-score ``Where(mask, 0, −∞)`` biases (dynamo), masks from
``ConstantOfShape → Equal → Where → Expand`` on int64 shapes, ``math.ceil`` on float scalars and
TensorFlow-style padding as explicit ``Pad`` nodes (TorchScript).

Text models take ``input_ids`` and ``attention_mask`` (int64, 40 tokens) and return the last
hidden state; vision models take ``pixel_values``, Whisper's encoder ``input_features`` (mel
bins × frames) and wav2vec2 ``input_values`` (samples), and return theirs. Full size (default): the
shapes of the published small checkpoints where one exists (bert-mini, gpt2 at 4 layers,
vit/deit-tiny, mobilenet_v2_1.0_224, whisper-tiny's encoder, wav2vec2-base, …; "llama" is a
4-layer, 512-wide Llama with grouped-query attention) for benchmarks/hf_models.py; ``--tiny``: a few
channels and layers (files of ≤ 300 KB), the test suite's fixtures (tests/data/hf/).
"""

from __future__ import annotations

import argparse
import os
import sys

TOKENS = 40
# models only the dynamo exporter writes: torch 2.13's TorchScript exporter fails on MobileViTV2's
# patch folding (``F.fold``: a TypeError in its opset-18 col2im symbolic; opset 17 has no Col2Im)
DYNAMO_ONLY = frozenset({"mobilevitv2"})


def _text(model_cls, config):
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model_cls(config).eval()

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask)[0]

    ids = torch.randint(0, config.vocab_size, (1, TOKENS))
    mask = torch.ones(1, TOKENS, dtype=torch.int64)
    mask[0, -5:] = 0  # padding at the end, as a tokenizer writes it
    return LastHiddenState().eval(), (ids, mask), ["input_ids", "attention_mask"]


def _vision(model_cls, config, size):
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model_cls(config).eval()

        def forward(self, pixel_values):
            return self.model(pixel_values=pixel_values)[0]

    return LastHiddenState().eval(), (torch.randn(1, 3, size, size),), ["pixel_values"]


def _audio(model_cls, config, shape, name):
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model_cls(config).eval()

        def forward(self, features):
            return self.model(**{name: features})[0]

    return LastHiddenState().eval(), (torch.randn(*shape),), [name]


def _whisper_encoder(config):
    import transformers as hf

    return hf.WhisperModel(config).encoder


def models(tiny: bool) -> dict:
    """``{name: () -> (module, example inputs, input names)}``."""
    import transformers as hf

    text = (
        dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        if tiny
        else dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    )
    image = 32 if tiny else 224
    small_image = 64 if tiny else 224  # the tiny conv nets' last maps stay larger than 1×1
    vit = (
        dict(image_size=image, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        if tiny
        else dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768)
    )
    gpt2 = dict(vocab_size=512, n_embd=32, n_layer=2, n_head=2) if tiny else dict(n_embd=768, n_layer=4, n_head=12)
    t5 = (
        dict(vocab_size=512, d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16)
        if tiny
        else dict(d_model=512, d_ff=2048, num_layers=6, num_heads=8, d_kv=64)
    )
    swin = dict(image_size=image, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4) if tiny else dict(image_size=224)
    mobilenet = dict(image_size=small_image, depth_multiplier=0.25, finegrained_output=False) if tiny else dict(image_size=image)
    mobilevit = (
        dict(image_size=small_image, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 40], expand_ratio=2.0)
        if tiny
        else dict(image_size=256)
    )
    convnext = dict(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]) if tiny else dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3])
    llama = (
        dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
        if tiny
        else dict(hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2)
    )
    whisper = (
        dict(
            d_model=32,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            num_mel_bins=16,
            max_source_positions=50,
        )
        if tiny
        else dict(
            d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6, decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536
        )
    )
    whisper_input = (1, 16, 100) if tiny else (1, 80, 3000)  # mel bins × frames (30 s for the full size)
    wav2vec2 = (
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            conv_dim=(16, 16, 16),
            conv_stride=(5, 2, 2),
            conv_kernel=(10, 3, 3),
            num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4,
        )
        if tiny
        else dict()
    )
    wav2vec2_input = (1, 2000) if tiny else (1, 16000)  # samples (1 s at 16 kHz for the full size)
    convbert = (
        dict(text, embedding_size=32)
        if tiny
        else dict(hidden_size=256, num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024, embedding_size=128)  # conv-bert-small
    )
    phi3 = (  # the rotation covers the whole head: the pass-through slice of the rotary step is empty
        dict(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, pad_token_id=0)
        if tiny
        else dict(vocab_size=32064, hidden_size=512, intermediate_size=1376, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=8, pad_token_id=0)
    )
    focalnet = dict(image_size=image, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3]) if tiny else dict()  # focalnet-tiny
    mobilevitv2 = dict(image_size=small_image, width_multiplier=0.125, ffn_multiplier=1) if tiny else dict(image_size=256)  # mobilevitv2-1.0
    return {
        "bert": lambda: _text(hf.BertModel, hf.BertConfig(**text)),
        "gpt2": lambda: _text(hf.GPT2Model, hf.GPT2Config(**gpt2)),
        "t5_encoder": lambda: _text(hf.T5EncoderModel, hf.T5Config(**t5)),
        "vit": lambda: _vision(hf.ViTModel, hf.ViTConfig(**vit), image),
        "swin": lambda: _vision(hf.SwinModel, hf.SwinConfig(**swin), image),
        "mobilenet_v2": lambda: _vision(hf.MobileNetV2Model, hf.MobileNetV2Config(**mobilenet), small_image),
        "mobilevit": lambda: _vision(hf.MobileViTModel, hf.MobileViTConfig(**mobilevit), 256 if not tiny else small_image),
        "convnext": lambda: _vision(hf.ConvNextModel, hf.ConvNextConfig(**convnext), small_image),
        "llama": lambda: _text(hf.LlamaModel, hf.LlamaConfig(**llama)),
        "whisper_encoder": lambda: _audio(_whisper_encoder, hf.WhisperConfig(**whisper), whisper_input, "input_features"),
        "wav2vec2": lambda: _audio(hf.Wav2Vec2Model, hf.Wav2Vec2Config(**wav2vec2), wav2vec2_input, "input_values"),
        "convbert": lambda: _text(hf.ConvBertModel, hf.ConvBertConfig(**convbert)),
        "phi3": lambda: _text(hf.Phi3Model, hf.Phi3Config(**phi3)),
        "focalnet": lambda: _vision(hf.FocalNetModel, hf.FocalNetConfig(**focalnet), image if tiny else 224),
        "mobilevitv2": lambda: _vision(hf.MobileViTV2Model, hf.MobileViTV2Config(**mobilevitv2), small_image if tiny else 256),
    }


def randomize(module) -> None:
    """Weights that keep activations alive through the network: the configs' initialisers (normal
    with std 0.02, batch norms at identity) make a deep net's output vanish (a tiny MobileNetV2 gave
    values below 1e-25, MobileViT exact zeros), which no comparison could tell from a wrong
    kernel. Convs and linear layers get He-normal weights (std √(2 / fan-in)), biases and norms'
    affine parameters small random values, batch norms random statistics."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)) or type(layer).__name__ == "Conv1D":  # GPT-2's Conv1D is a linear layer
                weight = layer.weight
                fan_in = weight[0].numel() if not type(layer).__name__ == "Conv1D" else weight.shape[0]
                weight.copy_(torch.randn(weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
                if getattr(layer, "bias", None) is not None:
                    layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)
            elif isinstance(layer, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(layer).__name__:
                for name in ("weight", "bias"):
                    value = getattr(layer, name, None)
                    if isinstance(value, torch.Tensor):
                        value.copy_((1.0 if name == "weight" else 0.0) + torch.randn(value.shape, generator=generator) * 0.1)
                if isinstance(layer, nn.BatchNorm2d):
                    layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=generator) * 0.1)
                    layer.running_var.copy_(torch.rand(layer.running_var.shape, generator=generator) + 0.5)


def export(name: str, build, exporter: str, out_dir: str) -> str:
    """Write ``OUT_DIR/NAME_EXPORTER.onnx`` (one file: weights inside) and return its path."""
    import torch

    torch.manual_seed(0)
    module, inputs, names = build()
    randomize(module)
    path = os.path.join(out_dir, f"{name}_{exporter}.onnx")
    with torch.no_grad():
        if exporter == "dynamo":
            program = torch.onnx.export(module, inputs, input_names=names, dynamo=True, opset_version=18)
            program.save(path, external_data=False)
        else:
            torch.onnx.export(module, inputs, path, input_names=names, dynamo=False, opset_version=17)
    _strip_annotations(path)
    return path


def _strip_annotations(path: str) -> None:
    """Drop the exporters' per-node source locations and metadata (most of a tiny file's bytes;
    no operator reads them)."""
    import onnx

    model = onnx.load(path)
    for graph in [model.graph, *(function for function in model.functions)]:
        for node in graph.node:
            node.doc_string = ""
            del node.metadata_props[:]
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output, *model.graph.initializer]:
        del value.metadata_props[:]
    onnx.save(model, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--tiny", action="store_true", help="the test fixtures' sizes")
    parser.add_argument("--only", default=None, help="comma-separated model names")
    parser.add_argument("--exporter", default="dynamo,script")
    args = parser.parse_args(argv)
    import warnings

    warnings.simplefilter("ignore")
    os.makedirs(args.out_dir, exist_ok=True)
    table = models(args.tiny)
    names = args.only.split(",") if args.only else list(table)
    for name in names:
        for exporter in args.exporter.split(","):
            if exporter == "script" and name in DYNAMO_ONLY:
                print(f"{name}: TorchScript export skipped (see DYNAMO_ONLY)", flush=True)
                continue
            path = export(name, table[name], exporter, args.out_dir)
            print(f"{path}: {os.path.getsize(path):,} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
