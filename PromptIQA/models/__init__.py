"""Network pieces of PromptIQA."""
from .backbone import DEFAULT_BACKBONE
from .mal import MAL, AttentionBlock, SpatialSelfAttention
from .promptiqa import ModelConfig, PromptIQA

__all__ = ["DEFAULT_BACKBONE", "MAL", "AttentionBlock", "ModelConfig", "PromptIQA", "SpatialSelfAttention"]
