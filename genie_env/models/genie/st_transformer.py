"""Spatiotemporal (ST) transformer shared by every Genie network.

Genie (Bruce et al. 2024, arXiv 2402.15391, Sec. 2.1) factorises attention over a video of ``T`` frames with ``S``
tokens each into two cheap passes per block:

1. **spatial** attention among the ``S`` tokens of one frame (bidirectional),
2. **causal temporal** attention: each spatial position attends to the *same* position at times ``<= t``,
3. one feed-forward network (the paper drops the FFN after the spatial layer).

Every sub-layer is pre-norm with a residual connection. Tensors are laid out ``(B, T, S, D)`` throughout.

Positional information:

* **space** -- each network adds a learned per-position embedding to its input tokens (see the model files);
* **time** -- rotary embeddings (RoPE) inside the temporal attention. RoPE only encodes *relative* time offsets,
  so a model trained on 16-frame clips sees the same geometry in frame 1,000 of a rollout, and a KV cache whose
  oldest entries slide out of the window never needs re-encoding.

Temporal context window (``context_frames = W``): a query at time ``t`` attends to times ``t - W + 1 .. t``. During
training on clips of ``T <= W`` frames this is plain causal attention. At generation time :class:`KVCache` keeps the
temporal keys/values of the last ``W - 1`` frames, so stepping one new frame costs one frame of compute regardless
of the rollout length. Because the window is applied identically in the uncached path (a banded causal mask),
cached and uncached computation agree for *any* length -- like sliding-window attention in language models, the
receptive field of a deep stack still reaches further back than ``W`` frames through the layers.

Optional QK-norm (per-head RMSNorm on queries and keys, as used for the paper's 10.1B model) keeps attention
logits bounded in low precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

# One layer's cached temporal keys and values, each ``((B S), heads, L, head_dim)``; keys are stored *before*
# the rotary embedding so that they can be re-rotated to window-relative positions at every step.
LayerKV = tuple[Tensor, Tensor]


def _rope_cos_sin(num_positions: int, dim: int, base: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """Rotary tables for positions ``0 .. num_positions - 1``.

    Returns:
        ``(cos, sin)``, each ``(num_positions, dim // 2)`` float32.
    """
    inv_freq = base ** (-torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    angles = torch.arange(num_positions, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return angles.cos(), angles.sin()


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (..., L, head_dim) by the tables ``cos``/``sin`` (L, head_dim // 2) ("rotate-half" layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.to(x.dtype)


def temporal_attention_mask(
    num_new: int,
    num_past: int,
    context_frames: int | None,
    past_valid: Tensor | None,
    spatial: int,
    device: torch.device,
) -> Tensor | None:
    """Boolean mask (True = may attend) for temporal attention of ``num_new`` frames over ``num_past`` cached ones.

    Args:
        num_new: frames being computed now (queries); they sit at times ``num_past .. num_past + num_new - 1``.
        num_past: frames already in the cache (keys only).
        context_frames: window ``W``; ``None`` means unbounded.
        past_valid: ``(B, num_past)`` bool, False for cache slots that belong to a previous episode.
        spatial: number of spatial positions ``S`` (the batch of temporal attention is ``B * S``).
        device: device of the mask.

    Returns:
        ``None`` when plain causal attention (or no mask at all) is exact, else a mask broadcastable to
        ``((B S), heads, num_new, num_past + num_new)``.
    """
    window_binds = context_frames is not None and num_past + num_new > context_frames
    past_all_valid = past_valid is None or bool(past_valid.all())
    if not window_binds and past_all_valid and (num_past == 0 or num_new == 1):
        return None  # the caller uses is_causal (no past) or full attention (single new frame)
    q_time = torch.arange(num_past, num_past + num_new, device=device)[:, None]
    k_time = torch.arange(num_past + num_new, device=device)[None, :]
    allowed = k_time <= q_time
    if context_frames is not None:
        allowed = allowed & (k_time > q_time - context_frames)
    if past_all_valid:
        return allowed[None, None]
    key_valid = torch.cat([past_valid, past_valid.new_ones(past_valid.shape[0], num_new)], dim=1)  # (B, L + T)
    allowed = allowed[None] & key_valid[:, None, :]  # (B, T, L + T)
    return repeat(allowed, "b q k -> (b s) 1 q k", s=spatial)


class SelfAttention(nn.Module):
    """Multi-head self-attention projections with optional QK-norm.

    The inner width ``num_heads * head_dim`` may differ from ``dim`` (the paper presets use a narrower inner width
    to match the reported parameter totals).
    """

    def __init__(self, dim: int, num_heads: int, head_dim: int, qk_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * num_heads * head_dim)
        self.proj = nn.Linear(num_heads * head_dim, dim)
        self.q_norm: nn.Module = nn.RMSNorm(head_dim) if qk_norm else nn.Identity()
        self.k_norm: nn.Module = nn.RMSNorm(head_dim) if qk_norm else nn.Identity()

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Map ``x`` (N, L, dim) to ``q, k, v``, each (N, heads, L, head_dim); q and k are normalised if enabled."""
        q, k, v = rearrange(self.qkv(x), "n l (three h e) -> three n h l e", three=3, h=self.num_heads)
        return self.q_norm(q), self.k_norm(k), v

    def output(self, attended: Tensor) -> Tensor:
        """Merge heads of ``attended`` (N, heads, L, head_dim) and project back to (N, L, dim)."""
        return self.proj(rearrange(attended, "n h l e -> n l (h e)"))


class FeedForward(nn.Module):
    """Two-layer GELU MLP ``dim -> hidden -> dim``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the MLP to ``x`` (..., dim)."""
        return self.fc2(F.gelu(self.fc1(x)))


class STBlock(nn.Module):
    """One ST block: spatial attention -> causal temporal attention -> FFN, all pre-norm with residuals."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        mlp_ratio: float,
        qk_norm: bool,
        context_frames: int | None,
        rope_base: float,
    ) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"head_dim must be even for rotary embeddings, got {head_dim=}")
        self.context_frames = context_frames
        self.rope_base = rope_base
        self.head_dim = head_dim
        self.norm_spatial = nn.LayerNorm(dim)
        self.spatial = SelfAttention(dim, num_heads, head_dim, qk_norm)
        self.norm_temporal = nn.LayerNorm(dim)
        self.temporal = SelfAttention(dim, num_heads, head_dim, qk_norm)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, int(round(dim * mlp_ratio)))

    def rotate_past(self, keys: Tensor) -> Tensor:
        """Cached un-rotated keys ``(..., L, head_dim)`` rotated to positions ``0 .. L - 1``."""
        cos, sin = _rope_cos_sin(keys.shape[-2], self.head_dim, self.rope_base, keys.device)
        return _apply_rope(keys, cos, sin)

    def forward(
        self,
        x: Tensor,
        past: LayerKV | None = None,
        past_valid: Tensor | None = None,
        scratch: LayerKV | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Run the block.

        Args:
            x: ``(B, T, S, D)`` tokens of ``T`` consecutive *new* frames.
            past: cached temporal keys/values of the frames immediately before ``x`` (see :class:`KVCache`).
            past_valid: ``(B, L)`` bool validity of the cached frames (False = belongs to a finished episode).
            scratch: instead of ``past``, for one new frame: :meth:`KVCache.scratch` buffers holding the *rotated*
                past keys and the values in slots ``0 .. L - 1``; this call writes its frame into slot ``L``. The
                MaskGIT passes of one frame share them, so the history is neither re-rotated nor copied per pass.

        Returns:
            ``(x, k, v)``: the updated tokens ``(B, T, S, D)`` and this call's un-rotated temporal keys/values
            ``((B S), heads, T, head_dim)`` for the caller to cache.
        """
        b, t, s, _ = x.shape

        # Spatial attention: every frame is an independent sequence of S tokens.
        h = rearrange(self.norm_spatial(x), "b t s d -> (b t) s d")
        q, k, v = self.spatial.project(h)
        h = self.spatial.output(F.scaled_dot_product_attention(q, k, v))
        x = x + rearrange(h, "(b t) s d -> b t s d", b=b)

        # Causal temporal attention: every spatial position is an independent sequence over time.
        h = rearrange(self.norm_temporal(x), "b t s d -> (b s) t d")
        q, k_new, v_new = self.temporal.project(h)
        if scratch is not None:
            if t != 1 or past is not None:
                raise ValueError(f"scratch buffers take one new frame and no past, got {t} frames")
            k, v = scratch
            num_past = k.shape[2] - 1
        else:
            k, v = k_new, v_new
            num_past = 0 if past is None else past[0].shape[2]
            if past is not None:
                k = torch.cat([past[0], k_new], dim=2)
                v = torch.cat([past[1], v_new], dim=2)
        # Positions are relative to the oldest frame in view, so they stay in 0 .. W - 1 however long the rollout.
        cos, sin = _rope_cos_sin(num_past + t, self.head_dim, self.rope_base, x.device)
        q = _apply_rope(q, cos[num_past:], sin[num_past:])
        if scratch is not None:
            k[:, :, num_past:] = _apply_rope(k_new, cos[num_past:], sin[num_past:])
            v[:, :, num_past:] = v_new
        else:
            k = _apply_rope(k, cos, sin)
        mask = temporal_attention_mask(t, num_past, self.context_frames, past_valid, s, x.device)
        is_causal = mask is None and num_past == 0 and t > 1
        h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
        x = x + rearrange(self.temporal.output(h), "(b s) t d -> b t s d", b=b)

        x = x + self.ffn(self.norm_ffn(x))
        return x, k_new, v_new


class KVCache:
    """Temporal key/value cache of an :class:`STTransformer` for a batch of independent streams (e.g. envs).

    Only temporal attention crosses frames, so caching each layer's temporal keys/values of completed frames is
    enough to compute a new frame exactly. The cache is a sliding window: it keeps the last ``context_frames - 1``
    frames (the new frame itself fills the last slot of the window); older frames are dropped.

    All streams advance in lock-step (one slot per appended frame). A stream can start a new episode at any time
    via :meth:`reset`, which marks its slots invalid so that attention ignores them; because every later frame is
    appended to all streams at once, the valid slots of each stream stay contiguous and relative positions stay
    exact.

    Memory: ``2 * num_layers * B * S * heads * head_dim * (context_frames - 1)`` elements.

    Attributes:
        keys: per layer, ``((B S), heads, L, head_dim)`` un-rotated keys or ``None`` before the first append.
        values: per layer, like ``keys``.
        valid: ``(B, L)`` bool, True where the slot belongs to the stream's current episode.
    """

    def __init__(self, num_layers: int, batch_size: int, context_frames: int | None) -> None:
        self.batch_size = batch_size
        self.max_frames = None if context_frames is None else max(context_frames - 1, 0)
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers
        self.valid: Tensor | None = None
        self._scratch: list[LayerKV | None] = [None] * num_layers

    @property
    def num_frames(self) -> int:
        """Number of cached frame slots ``L`` (valid or not)."""
        return 0 if self.valid is None else self.valid.shape[1]

    def layer(self, index: int) -> LayerKV | None:
        """Cached ``(keys, values)`` of layer ``index`` or ``None`` when empty."""
        k, v = self.keys[index], self.values[index]
        if k is None or v is None or k.shape[2] == 0:
            return None
        return k, v

    def scratch(self, index: int, rotate: Callable[[Tensor], Tensor]) -> LayerKV | None:
        """Layer ``index``'s buffers ``((B S), heads, L + 1, head_dim)`` for sampling one new frame repeatedly.

        Slots ``0 .. L - 1`` hold ``rotate(keys)`` and the values, built once per cache state (any change to the
        cache drops them); slot ``L`` is for the new frame. ``None`` when the layer has no history.
        """
        layer = self.layer(index)
        if layer is None:
            return None
        if self._scratch[index] is None:
            k, v = layer
            k_buf = k.new_empty(*k.shape[:2], k.shape[2] + 1, k.shape[3])
            v_buf = v.new_empty(*v.shape[:2], v.shape[2] + 1, v.shape[3])
            k_buf[:, :, :-1] = rotate(k)
            v_buf[:, :, :-1] = v
            self._scratch[index] = (k_buf, v_buf)
        return self._scratch[index]

    def append(self, new: list[tuple[Tensor, Tensor]]) -> None:
        """Append every layer's keys/values of ``T`` new frames (all streams valid) and trim to the window."""
        self._scratch = [None] * len(self.keys)
        num_new = new[0][0].shape[2]
        for i, (k, v) in enumerate(new):
            old_k, old_v = self.keys[i], self.values[i]
            k = k if old_k is None else torch.cat([old_k, k], dim=2)
            v = v if old_v is None else torch.cat([old_v, v], dim=2)
            if self.max_frames is not None:
                start = k.shape[2] - min(k.shape[2], self.max_frames)
                k, v = k[:, :, start:], v[:, :, start:]
            # Detach and copy so that trimming frees the old buffers instead of keeping views alive.
            self.keys[i], self.values[i] = k.detach().contiguous(), v.detach().contiguous()
        device = new[0][0].device
        valid_new = torch.ones(self.batch_size, num_new, dtype=torch.bool, device=device)
        valid = valid_new if self.valid is None else torch.cat([self.valid, valid_new], dim=1)
        if self.max_frames is not None:
            valid = valid[:, valid.shape[1] - min(valid.shape[1], self.max_frames) :]
        self.valid = valid

    def reset(self, streams: Tensor) -> None:
        """Forget the history of the streams where ``streams`` (B,) bool is True (start of a new episode)."""
        if self.valid is not None:
            self.valid = self.valid & ~streams.to(self.valid.device)[:, None]

    def load_streams(self, streams: Tensor, source: KVCache) -> None:
        """Replace the history of some streams by another cache's (an env restarting from a multi-frame prompt).

        ``source`` holds the ``n = streams.sum()`` restarting streams, in order, e.g. a fresh cache that the prompt
        frames were appended to. Their frames become the newest slots of those streams, the older slots of those
        streams turn invalid, and the other streams are untouched. Because positions are relative to the oldest
        slot and the loaded frames end at the newest slot, every stream still sees exact relative positions.

        Args:
            streams: ``(B,)`` bool, True for the streams to overwrite.
            source: cache of ``n`` streams with the same layers, heads and head size.

        Raises:
            ValueError: If the stream count or the layer count does not match.
        """
        streams = streams.to(torch.bool)
        n = int(streams.sum())
        if tuple(streams.shape) != (self.batch_size,) or source.batch_size != n:
            raise ValueError(
                f"streams must be ({self.batch_size},) bool selecting source's {source.batch_size} streams, "
                f"got shape {tuple(streams.shape)} selecting {n}"
            )
        if len(source.keys) != len(self.keys):
            raise ValueError(f"source has {len(source.keys)} layers, this cache {len(self.keys)}")
        if n == 0 or source.valid is None or source.num_frames == 0:
            self.reset(streams)
            return
        self._scratch = [None] * len(self.keys)
        num_new = source.num_frames
        if self.max_frames is not None and num_new > self.max_frames:
            raise ValueError(f"source holds {num_new} frames, more than this window's {self.max_frames}")
        device = source.valid.device
        streams = streams.to(device)
        if self.valid is None:  # an empty cache: start from all-invalid slots shaped like the source's
            like = [(k.new_zeros(k.shape[0] // n * self.batch_size, *k.shape[1:]), k) for k in source.keys]  # type: ignore[union-attr]
            self.keys = [z for z, _ in like]
            self.values = [z.clone() for z, _ in like]
            self.valid = torch.zeros(self.batch_size, num_new, dtype=torch.bool, device=device)
        pad = num_new - self.num_frames
        if pad > 0:  # fewer slots than the prompt: prepend invalid slots to every stream
            self.keys = [F.pad(k, (0, 0, pad, 0)) for k in self.keys]  # type: ignore[arg-type]
            self.values = [F.pad(v, (0, 0, pad, 0)) for v in self.values]  # type: ignore[arg-type]
            self.valid = F.pad(self.valid, (pad, 0), value=False)
        spatial = self.keys[0].shape[0] // self.batch_size  # type: ignore[union-attr]
        rows = repeat(streams, "b -> (b s)", s=spatial)
        for i in range(len(self.keys)):
            for store, new in ((self.keys, source.keys[i]), (self.values, source.values[i])):
                tensor = store[i].clone()  # type: ignore[union-attr]
                block = torch.zeros_like(tensor[rows])
                block[:, :, -num_new:] = new  # type: ignore[index]
                tensor[rows] = block
                store[i] = tensor
        valid = self.valid.clone()
        valid[streams] = False
        valid[streams, -num_new:] = source.valid[:, -num_new:]
        self.valid = valid


class STTransformer(nn.Module):
    """A stack of :class:`STBlock` with a final LayerNorm.

    Args:
        dim: model width ``D``.
        depth: number of blocks.
        num_heads: attention heads.
        head_dim: per-head width (even, for RoPE).
        mlp_ratio: FFN hidden width as a multiple of ``dim``.
        qk_norm: RMSNorm queries and keys per head.
        context_frames: temporal attention window ``W`` (``None``: unbounded).
        rope_base: RoPE base frequency for the time axis.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        head_dim: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        context_frames: int | None = None,
        rope_base: float = 10_000.0,
    ) -> None:
        super().__init__()
        self.context_frames = context_frames
        self.blocks = nn.ModuleList(
            STBlock(dim, num_heads, head_dim, mlp_ratio, qk_norm, context_frames, rope_base) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        # Toggled by diffusers' ModelMixin.enable_gradient_checkpointing(); recomputes blocks in backward.
        self.gradient_checkpointing = False

    def new_cache(self, batch_size: int) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` streams sized to this stack's window."""
        return KVCache(len(self.blocks), batch_size, self.context_frames)

    def forward(
        self,
        x: Tensor,
        cache: KVCache | None = None,
        update_cache: bool = False,
        block_inputs: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """Run the stack over ``T`` new frames.

        Args:
            x: ``(B, T, S, D)`` input tokens.
            cache: temporal keys/values of earlier frames; the new frames come right after them in time.
            update_cache: append this call's keys/values to ``cache`` (use once the frames are final).
            block_inputs: optional per-block conditioning, one tensor per block broadcastable to ``x`` (e.g.
                ``(B, T, 1, D)``), added to the tokens before that block.

        Returns:
            ``(B, T, S, D)`` normalised output tokens.
        """
        new_kv: list[tuple[Tensor, Tensor]] = []
        past_valid = None if cache is None or cache.num_frames == 0 else cache.valid
        # One new frame over an unchanging history (MaskGIT's passes): rotate and lay out the history once.
        reuse_past = cache is not None and not update_cache and x.shape[1] == 1 and not torch.is_grad_enabled()
        if block_inputs is not None and len(block_inputs) != len(self.blocks):
            raise ValueError(f"need one block input per block ({len(self.blocks)}), got {len(block_inputs)}")
        for i, block in enumerate(self.blocks):
            if block_inputs is not None:
                x = x + block_inputs[i]
            past = None if cache is None else cache.layer(i)
            if self.gradient_checkpointing and torch.is_grad_enabled() and past is None:
                x, k, v = self._gradient_checkpointing_func(block, x)
            elif reuse_past and past is not None:
                x, k, v = block(x, None, past_valid, scratch=cache.scratch(i, block.rotate_past))  # type: ignore[union-attr]
            else:
                x, k, v = block(x, past, past_valid)
            new_kv.append((k, v))
        if update_cache:
            if cache is None:
                raise ValueError("update_cache=True needs a cache")
            cache.append(new_kv)
        return self.norm(x)


def init_weights(module: nn.Module) -> None:
    """ViT-style init: truncated-normal(0.02) linear/embedding weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
