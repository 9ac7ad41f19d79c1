"""Cross-view self-attention for the GE-Sim multi-view DiT.

GE-Sim stacks its camera views along the batch axis, so an ordinary Cosmos block only lets tokens of one
view attend to each other. In every k-th block GE-Sim instead regroups the queries, keys and values as
``(b v) n l c -> b n (v l) c``, so that all tokens of all views of one sample attend jointly. RoPE is
applied before the regrouping with the same (t, h, w) positions in every view, so views are told apart only
by the view embedding that the network adds to the AdaLN conditioning.

:class:`CrossViewAttnProcessor` is a drop-in replacement for diffusers' ``CosmosAttnProcessor2_0`` on a
block's ``attn1``; with ``num_views == 1`` it computes exactly what that processor computes.

It also carries the two per-call states of a DiT whose memory frames attend only to memory
(``MultiViewDiT(memory_attention="causal")``), set by the network before a pass and cleared after it:

* ``memory_tokens``: which tokens are memory. Memory queries then see memory keys only, future queries see all,
  so the memory tokens' features at every block do not depend on the frames being denoised;
* ``record`` / ``past``: a memory-only pass records each block's memory keys and values; later passes over the
  future tokens alone attend to them as well. Because of the mask above, this equals the masked pass over all
  tokens, for a fifth of the tokens per Euler step with four memory frames and one future frame.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import apply_rotary_emb
from einops import rearrange


class CrossViewAttnProcessor:
    """Self-attention processor that attends jointly over all views of a sample.

    The owning network sets :attr:`num_views` before each forward pass (the block API of diffusers has no
    way to pass it through), because the attention module itself only sees ``(B * V, L, C)`` tokens.

    Attributes:
        num_views: Number of views ``V`` stacked view-major-inner in the batch, i.e. batch row ``b * V + v``
            holds view ``v`` of sample ``b``. ``1`` gives plain per-view attention.
    """

    def __init__(self, num_views: int = 1) -> None:
        """Creates the processor.

        Args:
            num_views: Initial number of stacked views; the network overwrites it on every forward.
        """
        self.num_views = num_views
        self.memory_tokens: torch.Tensor | None = None
        self.record: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.past: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Runs joint multi-view self-attention.

        Args:
            attn: The diffusers ``Attention`` module (QK RMSNorm, no biases in Cosmos).
            hidden_states: Tokens, shape ``(B * V, L, C)``.
            encoder_hidden_states: Must be ``None``: this processor is for self-attention only.
            attention_mask: Must be ``None``: Cosmos self-attention is unmasked.
            image_rotary_emb: ``(cos, sin)``, each ``(L, head_dim)``, from ``CosmosRotaryPosEmbed``.

        Returns:
            Attention output, shape ``(B * V, L, C)``.

        Raises:
            ValueError: If used for cross-attention or with a mask, or if the batch is not a multiple of
                :attr:`num_views`.
        """
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("CrossViewAttnProcessor only supports unmasked self-attention.")
        views = self.num_views
        if hidden_states.shape[0] % views != 0:
            raise ValueError(f"Batch {hidden_states.shape[0]} is not a multiple of {self.num_views=}.")

        # (b v) l (n d) -> (b v) n l d, the layout RMSNorm and RoPE expect.
        query, key, value = (
            rearrange(proj(hidden_states), "bv l (n d) -> bv n l d", n=attn.heads)
            for proj in (attn.to_q, attn.to_k, attn.to_v)
        )
        query = attn.norm_q(query)
        key = attn.norm_k(key)

        # RoPE before regrouping: every view reuses the same (t, h, w) positions, as in GE-Sim.
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)
            key = apply_rotary_emb(key, image_rotary_emb, use_real=True, use_real_unbind_dim=-2)

        if self.record is not None:  # a memory-only pass: keep this block's memory keys and values
            self.record.append((key, value))
        if self.past is not None:  # future tokens only: the recorded memory comes first in every view
            key = torch.cat([self.past[0].to(key.dtype), key], dim=2)
            value = torch.cat([self.past[1].to(value.dtype), value], dim=2)
        mask = None
        if self.memory_tokens is not None:
            memory = rearrange(self.memory_tokens, "(b v) l -> b (v l)", v=views)
            # Memory queries see memory keys only; future queries see everything. (b, 1, Lq, Lk), True = attend.
            mask = (~memory[:, :, None] | memory[:, None, :])[:, None]

        # The GE-Sim regroup (b v) n l d -> b n (v l) d, written straight into the (B, L, H, D) layout that
        # diffusers' attention dispatcher takes, so the configured backend (SDPA, flash, ...) is honoured.
        query, key, value = (rearrange(x, "(b v) n l d -> b (v l) n d", v=views) for x in (query, key, value))
        out = dispatch_attention_fn(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        out = rearrange(out, "b (v l) n d -> (b v) l (n d)", v=views).type_as(query)

        out = attn.to_out[0](out)
        return attn.to_out[1](out)
