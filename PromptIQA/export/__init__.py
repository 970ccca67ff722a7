"""Deployment without PyTorch: the scoring path as ONNX graphs, and scoring with them on ONNX Runtime.

    promptiqa-export --checkpoint best.pth.tar --output exported/ [--prompts prompts.json] [--quantize int8]

    from PromptIQA.export import OnnxScorer
    scorer = OnnxScorer("exported/")
    prompts = scorer.encode_prompts(["isp1.png", "isp2.png"], [0.1, 0.9])
    scores = scorer.score_images(["query.png"], prompts)

onnx and onnxruntime are an optional extra (`pip install ".[onnx]"`); they are imported only when an
export or an ONNX Runtime session is made (docs/README.md, the map).
"""
from .exporter import export_onnx
from .manifest import ExportManifest, read_manifest
from .runtime import OnnxScorer

__all__ = ["ExportManifest", "OnnxScorer", "export_onnx", "read_manifest"]
