"""CLS-query attention capture for timm ViT blocks, keeping the fused attention kernel.

The SCM needs, per block, the post-softmax attention of the CLS query over the patch keys
(averaged over heads). The released SCM code materialises every N x N attention map to get it;
that costs memory and gives up `scaled_dot_product_attention`. Only one row is needed, so we
compute it separately: softmax(q_cls . K^T * scale), a (B, heads, 1, N) tensor, and let the block
keep its fused kernel for the full attention.

These functions drive timm's own modules (Block, Attention) with their own weights; they reproduce
the two-line Block.forward so that the CLS row can be returned alongside the block output instead
of being stashed on the module (which would be stateful and unfriendly to torch.compile).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from timm.layers import Attention
from timm.models.vision_transformer import Block


def check_supported_block(block: nn.Module, where: str) -> None:
    """Refuse blocks whose forward we cannot reproduce exactly (clear error, not wrong maps)."""
    if type(block) is not Block:
        raise TypeError(
            f"{where}: SCM needs timm's standard ViT Block, got {type(block).__name__}; "
            "models with other block types are not supported"
        )
    if type(block.attn) is not Attention:
        raise TypeError(
            f"{where}: SCM needs timm's standard Attention, got {type(block.attn).__name__}"
        )


def attention_with_cls_row(
    attn: Attention, x: torch.Tensor, num_prefix_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm Attention forward that also returns the head-mean CLS-query attention row.

    Returns (out (B, T, D), cls_row (B, N)) where T = prefix tokens + N patches and cls_row is
    the softmax attention of token 0 over the N patch keys, averaged over heads.
    """
    B, T, _ = x.shape
    gate = attn.gate(x).sigmoid() if attn.gate is not None else None
    qkv = attn.qkv(x).reshape(B, T, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, h, T, d)
    q, k = attn.q_norm(q), attn.k_norm(k)

    out = F.scaled_dot_product_attention(
        q, k, v, dropout_p=attn.attn_drop.p if attn.training else 0.0
    )  # (B, h, T, d)
    # The CLS row alone, softmax in float32. A multiply-and-sum rather than q_cls @ K^T: k is a
    # strided view of the qkv output, which matmul would copy (and keep for backward, one more
    # (B, h, T, d) tensor per block); the product below saves only the view and q_cls.
    logits = (k * (q[:, :, :1] * attn.scale)).sum(dim=-1)  # (B, h, T)
    row = logits.float().softmax(dim=-1)[:, :, num_prefix_tokens:]  # (B, h, N)
    cls_row = row.mean(dim=1)  # (B, N)

    out = out.transpose(1, 2).reshape(B, T, attn.attn_dim)  # (B, T, h*d)
    out = attn.norm(out)
    if gate is not None:
        out = out * gate
    out = attn.proj_drop(attn.proj(out))  # (B, T, D)
    return out, cls_row


def block_with_cls_row(
    block: Block, x: torch.Tensor, num_prefix_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """timm Block forward (pre-norm residual attention + MLP) that also returns the CLS row."""
    a, cls_row = attention_with_cls_row(block.attn, block.norm1(x), num_prefix_tokens)
    x = x + block.drop_path1(block.ls1(a))  # (B, T, D)
    x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))  # (B, T, D)
    return x, cls_row
