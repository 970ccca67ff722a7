"""Multi-view attention learning (MAL), the feature fusion of PromptIQA (docs/model.md, section 2).

Parameter names (`attention_module`, `qConv`, `c_q`, ...) are those of the published checkpoint.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Which of the MAL's attentions run through scaled_dot_product_attention (SDPA) off the CPU: "spatial"
# (each map's 784 positions, head dim 96, values 768), "channel" and "feature" (the row attentions,
# head dims 3072 and 3136, where only the memory-efficient kernel applies and plain matmuls may be
# faster). The CPU always runs the published formulas. To be decided per attention by
# benchmarks/attention_speed.py on a GPU (docs/model.md 2.7); not measured yet, so SDPA stays on.
SDPA_OFF_CPU = {"spatial": True, "channel": True, "feature": True}


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q kᵀ · scale) v by `scaled_dot_product_attention`. Its fused kernels need (B, heads,
    L, E) inputs whose last dimension is contiguous: callers pass contiguous (B, L, E) tensors."""
    out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale)
    return out.squeeze(1)


def uses_sdpa(x: torch.Tensor, attention: str) -> bool:
    """SDPA off the CPU, for the attentions SDPA_OFF_CPU names. On the CPU the published formulas
    stay: there SDPA measured slower (fp32 by about 5 %, bf16 by about 2x, forward and backward), and
    they keep the fp32 numbers of the published code bit for bit."""
    return x.device.type != "cpu" and SDPA_OFF_CPU[attention]


class SpatialSelfAttention(nn.Module):
    """SAGAN-style self-attention over the positions of one (B, C, H, W) map, with a residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.qConv = nn.Conv2d(dim, dim // 8, 1)
        self.kConv = nn.Conv2d(dim, dim // 8, 1)
        self.vConv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.qConv(x).flatten(2)  # (B, C/8, N)
        k = self.kConv(x).flatten(2)  # (B, C/8, N)
        v = self.vConv(x).flatten(2)  # (B, C, N)
        if uses_sdpa(x, "spatial"):  # unscaled energies, as published; positions as rows, channels contiguous
            q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))
            out = fused_attention(q, k, v, scale=1.0).transpose(1, 2)
        else:
            attn = torch.softmax(torch.bmm(q.transpose(1, 2), k), dim=-1)  # (B, N, N)
            out = torch.bmm(v, attn.transpose(1, 2))
        return self.gamma * out.reshape(x.shape) + x


class AttentionBlock(nn.Module):
    """Single-head attention over the rows of (B, R, d), with the published output reshape.
    `attention` names it in SDPA_OFF_CPU ("channel" or "feature"); it is not a weight."""

    def __init__(self, dim: int, drop: float = 0.1, attention: str = "channel"):
        super().__init__()
        self.c_q = nn.Linear(dim, dim)
        self.c_k = nn.Linear(dim, dim)
        self.c_v = nn.Linear(dim, dim)
        self.scale = dim**-0.5
        self.drop = nn.Dropout(drop)
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.c_q(x), self.c_k(x), self.c_v(x)  # contiguous (B, R, d), whatever x's layout
        if uses_sdpa(x, self.attention):
            y = fused_attention(q, k, v, self.scale)
        else:
            y = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1) @ v
        # Quirk (docs/model.md 2.6): (B, d, R) memory re-read as (B, R, d), not a transpose back.
        y = y.transpose(1, 2).reshape(x.shape)
        return self.drop(y) + x


class MAL(nn.Module):
    """Fuses F maps (B, D, S, S) into one (B, D, S*S) by spatial, feature and channel attention."""

    def __init__(self, in_dim: int, feature_num: int, feature_size: int):
        super().__init__()
        self.in_dim, self.feature_num = in_dim, feature_num
        tokens = feature_size * feature_size
        self.channel_attention = AttentionBlock(in_dim * feature_num, attention="channel")
        self.feature_attention = AttentionBlock(tokens * feature_num, attention="feature")
        self.attention_module = nn.ModuleList(SpatialSelfAttention(in_dim) for _ in range(feature_num))

    def forward(self, maps: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        x = torch.stack([att(m) for att, m in zip(self.attention_module, maps)], dim=1)
        b, f, d = x.shape[:3]
        x = x.reshape(b, f * d, -1)  # (B, F*D, N), channel f*D + c
        n = x.shape[-1]
        # Quirk (docs/model.md 2.3): the channel axis is regrouped as (D, F), F the faster index.
        by_feature = self.feature_attention(x.reshape(b, d, f * n)).reshape(b, f * d, n)
        by_channel = self.channel_attention(x.transpose(1, 2)).transpose(1, 2)
        fused = (by_feature + by_channel) / 2
        return fused.view(b, f, d, n).mean(dim=1)
