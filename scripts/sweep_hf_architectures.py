"""Export many more Hugging Face architectures at small size with both of torch's exporters, compile
each with slimtvm and compare it with onnxruntime (session 36's sweep).

    .venv/bin/pip install -e '.[hf,test]'                       # torch, transformers, onnxruntime (once)
    .venv/bin/python scripts/sweep_hf_architectures.py OUT_DIR [--only NAME,...]

For each architecture of :data:`ARCHITECTURES` (random weights from its ``transformers`` config, a
few channels and layers; scripts/export_hf_models.py's builders and weight re-drawing), writes
``OUT_DIR/NAME_dynamo.onnx`` and ``NAME_script.onnx``, compiles each for this machine and prints
one line: ``OK`` with the largest relative difference to onnxruntime on the same inputs, the
compile time and any conv or matmul left on TVM's generic schedule; ``MISMATCH`` above 1e-4;
``EXPORTFAIL`` (torch could not export the config: not slimtvm's) or ``COMPILEFAIL`` with the
first line of the error. Models that fail here and get fixed belong in export_hf_models.py, whose
``--tiny`` files are the test suite's fixtures (tests/data/hf/).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def architectures() -> dict:
    """``{name: () -> (module, example inputs, input names)}`` at small sizes."""
    import transformers as hf
    from export_hf_models import _audio, _text, _vision

    T = dict(vocab_size=512, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    V = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    A = dict(
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

    def t(cls, conf, **kw):
        return lambda: _text(getattr(hf, cls), getattr(hf, conf)(**{**T, **kw}))

    def v(cls, conf, size=32, base=True, **kw):
        return lambda: _vision(getattr(hf, cls), getattr(hf, conf)(**({**V, **kw} if base else kw)), size)

    def a(cls, conf, **kw):
        return lambda: _audio(getattr(hf, cls), getattr(hf, conf)(**{**A, **kw}), (1, 2000), "input_values")

    M = {
        "distilbert": lambda: _text(hf.DistilBertModel, hf.DistilBertConfig(vocab_size=512, dim=32, n_layers=2, n_heads=2, hidden_dim=64)),
        "roberta": t("RobertaModel", "RobertaConfig"),
        "albert": t("AlbertModel", "AlbertConfig", embedding_size=16),
        "electra": t("ElectraModel", "ElectraConfig", embedding_size=16),
        "deberta_v2": t("DebertaV2Model", "DebertaV2Config"),
        "mpnet": t("MPNetModel", "MPNetConfig"),
        "xlm_roberta": t("XLMRobertaModel", "XLMRobertaConfig"),
        "mobilebert": t("MobileBertModel", "MobileBertConfig", embedding_size=16, intra_bottleneck_size=16, true_hidden_size=16, num_feedforward_networks=2),
        "squeezebert": t("SqueezeBertModel", "SqueezeBertConfig", embedding_size=32),
        "convbert": t("ConvBertModel", "ConvBertConfig", embedding_size=32),
        "roformer": t("RoFormerModel", "RoFormerConfig", embedding_size=32),
        "funnel": lambda: _text(hf.FunnelModel, hf.FunnelConfig(vocab_size=512, block_sizes=[1, 1], d_model=32, n_head=2, d_head=16, d_inner=64)),
        "opt": lambda: _text(
            hf.OPTModel, hf.OPTConfig(vocab_size=512, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=2, word_embed_proj_dim=32)
        ),
        "bloom": lambda: _text(hf.BloomModel, hf.BloomConfig(vocab_size=512, hidden_size=32, n_layer=2, n_head=2)),
        "gpt_neo": lambda: _text(
            hf.GPTNeoModel,
            hf.GPTNeoConfig(vocab_size=512, hidden_size=32, num_layers=2, num_heads=2, attention_types=[[["global", "local"], 1]], window_size=16),
        ),
        "gpt_neox": t("GPTNeoXModel", "GPTNeoXConfig"),
        "gptj": lambda: _text(hf.GPTJModel, hf.GPTJConfig(vocab_size=512, n_embd=32, n_layer=2, n_head=2, rotary_dim=8)),
        "falcon": t("FalconModel", "FalconConfig"),
        "mistral": t("MistralModel", "MistralConfig", num_key_value_heads=1),
        "qwen2": t("Qwen2Model", "Qwen2Config", num_key_value_heads=1),
        "phi": t("PhiModel", "PhiConfig"),
        "phi3": t("Phi3Model", "Phi3Config", pad_token_id=0),
        "gemma": t("GemmaModel", "GemmaConfig", num_key_value_heads=1, head_dim=16),
        "gemma2": t("Gemma2Model", "Gemma2Config", num_key_value_heads=1, head_dim=16, sliding_window=16),
        "stablelm": t("StableLmModel", "StableLmConfig", num_key_value_heads=2),
        "olmo": t("OlmoModel", "OlmoConfig"),
        "codegen": lambda: _text(hf.CodeGenModel, hf.CodeGenConfig(vocab_size=512, n_embd=32, n_layer=2, n_head=2, rotary_dim=8)),
        "starcoder2": t("Starcoder2Model", "Starcoder2Config", num_key_value_heads=1),
        "gpt_bigcode": lambda: _text(hf.GPTBigCodeModel, hf.GPTBigCodeConfig(vocab_size=512, n_embd=32, n_layer=2, n_head=2)),
        "qwen3": t("Qwen3Model", "Qwen3Config", num_key_value_heads=1, head_dim=16),
        "bart": t(
            "BartModel",
            "BartConfig",
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
        ),
        "resnet": v("ResNetModel", "ResNetConfig", 64, base=False, embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
        "regnet": v("RegNetModel", "RegNetConfig", 64, base=False, embedding_size=8, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], groups_width=8),
        "efficientnet": v(
            "EfficientNetModel", "EfficientNetConfig", 64, base=False, image_size=64, width_coefficient=0.5, depth_coefficient=0.25, hidden_dim=640
        ),
        "convnextv2": v("ConvNextV2Model", "ConvNextV2Config", 64, base=False, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
        "dinov2": v("Dinov2Model", "Dinov2Config"),
        "beit": v("BeitModel", "BeitConfig", use_relative_position_bias=True),
        "deit": v("DeiTModel", "DeiTConfig"),
        "levit": v(
            "LevitModel",
            "LevitConfig",
            64,
            base=False,
            image_size=64,
            hidden_sizes=[16, 24, 32],
            num_attention_heads=[1, 2, 2],
            depths=[1, 1, 1],
            key_dim=[8, 8, 8],
        ),
        "poolformer": v("PoolFormerModel", "PoolFormerConfig", 64, base=False, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1]),
        "segformer": v(
            "SegformerModel",
            "SegformerConfig",
            64,
            base=False,
            hidden_sizes=[8, 16, 24, 32],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=16,
        ),
        "mobilenet_v1": v("MobileNetV1Model", "MobileNetV1Config", 64, base=False, image_size=64, depth_multiplier=0.25),
        "mobilevitv2": v("MobileViTV2Model", "MobileViTV2Config", 64, base=False, image_size=64, width_multiplier=0.25),
        "swinv2": v("Swinv2Model", "Swinv2Config", 32, base=False, image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4),
        "pvt_v2": v("PvtV2Model", "PvtV2Config", 64, base=False, hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 2]),
        "cvt": v("CvtModel", "CvtConfig", 64, base=False, embed_dim=[16, 24, 32], num_heads=[1, 2, 2], depth=[1, 1, 1], cls_token=[False, False, True]),
        "bit": v("BitModel", "BitConfig", 64, base=False, embedding_size=32, hidden_sizes=[32, 64, 96, 128], depths=[1, 1, 1, 1], num_groups=8),
        "focalnet": v("FocalNetModel", "FocalNetConfig", 32, base=False, image_size=32, embed_dim=16, depths=[1, 1], focal_levels=[2, 2], focal_windows=[3, 3]),
        "yolos": v("YolosModel", "YolosConfig", 32, image_size=[32, 32], num_detection_tokens=4),
        "data2vec_vision": v("Data2VecVisionModel", "Data2VecVisionConfig"),
        "clip_vision": v("CLIPVisionModel", "CLIPVisionConfig"),
        "siglip_vision": v("SiglipVisionModel", "SiglipVisionConfig"),
        "glpn": v(
            "GLPNModel",
            "GLPNConfig",
            64,
            base=False,
            hidden_sizes=[8, 16, 24, 32],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 2],
            decoder_hidden_size=16,
        ),
        "hiera": v(
            "HieraModel",
            "HieraConfig",
            64,
            base=False,
            image_size=[64, 64],
            embed_dim=16,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            patch_stride=[4, 4],
            patch_padding=[3, 3],
            patch_size=[7, 7],
            query_stride=[2, 2],
            masked_unit_size=[8, 8],
        ),
        "hubert": a("HubertModel", "HubertConfig"),
        "wavlm": a("WavLMModel", "WavLMConfig", num_buckets=32, max_bucket_distance=64),
        "sew": a("SEWModel", "SEWConfig", squeeze_factor=2),
        "unispeech": a("UniSpeechModel", "UniSpeechConfig"),
        "data2vec_audio": a("Data2VecAudioModel", "Data2VecAudioConfig", num_conv_pos_embeddings=5, num_conv_pos_embedding_groups=4),
    }
    return M


def check(path: str, out_dir: str) -> str:
    """Compile ``path`` with slimtvm and compare it with onnxruntime; one status line."""
    import onnx
    from conftest import onnxruntime_outputs, relative_difference
    from test_hf_exports import _inputs

    import slimtvm

    name = os.path.basename(path)[: -len(".onnx")]
    model = onnx.load(path)
    inputs = _inputs(model)
    start = time.perf_counter()
    try:
        artifact = slimtvm.compile(model, os.path.join(out_dir, f"{name}.so"))
    except Exception as err:  # noqa: BLE001 - the sweep reports every failure and goes on
        return f"COMPILEFAIL {name}: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    seconds = time.perf_counter() - start
    ours, reference = artifact.load().run(inputs), onnxruntime_outputs(model, inputs)
    worst = max(relative_difference(ours[key], value) for key, value in reference.items())
    fallbacks = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")["generic_fallbacks"]
    status = "OK" if worst <= 1e-4 else "MISMATCH"
    return f"{status} {name}: relative difference {worst:.1e}, compile {seconds:.0f} s, generic fallbacks {len(fallbacks)} {fallbacks[:4]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--only", default=None, help="comma-separated architecture names")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from export_hf_models import export

    table = architectures()
    os.makedirs(args.out_dir, exist_ok=True)
    for name in args.only.split(",") if args.only else list(table):
        for exporter in ("dynamo", "script"):
            try:
                path = export(name, table[name], exporter, args.out_dir)
            except Exception as err:  # noqa: BLE001 - torch's failure on a config, not slimtvm's
                print(f"EXPORTFAIL {name}_{exporter}: {type(err).__name__}", flush=True)
                continue
            print(check(path, args.out_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
