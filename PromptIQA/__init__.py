"""PromptIQA: image quality assessment under a requirement given by a few image-score pairs.

    import PromptIQA
    metric = PromptIQA.create_metric(checkpoint="hf:Zevin2023/PromptIQA", prompts="prompts.json")
    scores = metric(["query.png"])

    from PromptIQA import load_model, Scorer
    scorer = Scorer(load_model("PromptIQA/checkpoints/best_model.pth.tar"))
    prompts = scorer.encode_prompts(["isp1.png", "isp2.png"], [0.1, 0.9])
    scores = scorer.score_images(["query.png"], prompts)

    pooled = PromptIQA.create_metric(checkpoint=..., prompts="pool.csv", interval=0.9)
    score, low, high, spread = pooled(["query.png"])
"""
from .data.prompts import PromptSet, read_prompt_file
from .models import ModelConfig, PromptIQA
from .models.checkpoint import load_model, save_checkpoint
from .scoring.metric import PromptIQAMetric, ScoresWithInterval, create_metric
from .scoring.pools import pool_prompts, select_from_pool
from .scoring.scorer import Scorer
from .utils.errors import UserError

__all__ = ["ModelConfig", "PromptIQA", "PromptIQAMetric", "PromptSet", "Scorer", "ScoresWithInterval", "UserError",
           "create_metric", "load_model", "pool_prompts", "read_prompt_file", "save_checkpoint", "select_from_pool"]
