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
  so a model trained on 16-frame clips sees the same geometry in frame 1,000 of a rollout. A :class:`KVCache`
  therefore stores its keys already rotated, at each frame's *absolute* index in the stream (the angles are computed
  in float64, so index 10^6 is as exact as index 3): a frame's key is rotated once, when it is appended, and never
  again however far the window slides.

Temporal context window (``context_frames = W``): a query at time ``t`` attends to times ``t - W + 1 .. t``. During
training on clips of ``T <= W`` frames this is plain causal attention. At generation time :class:`KVCache` keeps the
temporal keys/values of the last ``W - 1`` frames in a ring of ``W`` slots, so stepping one new frame costs one
frame of compute regardless of the rollout length, and moves no history in memory. Because the window is applied
identically in the uncached path (a banded causal mask), cached and uncached computation agree for *any* length --
like sliding-window attention in language models, the receptive field of a deep stack still reaches further back
than ``W`` frames through the layers.

Optional QK-norm (per-head RMSNorm on queries and keys, as used for the paper's 10.1B model) keeps attention
logits bounded in low precision.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

# One layer's cached temporal keys and values, each ``((B S), heads, L, head_dim)``; keys are stored *after* the
# rotary embedding, at their frame's absolute position (see :class:`KVCache`).
LayerKV = tuple[Tensor, Tensor]


def _rope_cos_sin(
    num_positions: int, dim: int, base: float, device: torch.device, start: int = 0
) -> tuple[Tensor, Tensor]:
    """Rotary tables for positions ``start .. start + num_positions - 1``.

    The angles are computed in float64 and only the tables are rounded to float32, so a large ``start`` (a long
    rollout's absolute frame index) is as exact as a small one: ``rope(q, p) . rope(k, p')`` depends on ``p - p'``
    only, to float32 round-off.

    Returns:
        ``(cos, sin)``, each ``(num_positions, dim // 2)`` float32.
    """
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    positions = torch.arange(start, start + num_positions, dtype=torch.float64)
    angles = positions[:, None] * inv_freq[None, :]
    return angles.cos().float().to(device), angles.sin().float().to(device)


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` (..., L, head_dim) by the tables ``cos``/``sin`` (L, head_dim // 2) ("rotate-half" layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return rotated.to(x.dtype)


def temporal_attention_mask(num_frames: int, context_frames: int | None, device: torch.device) -> Tensor | None:
    """Boolean mask (True = may attend) of causal temporal attention within a clip of ``num_frames`` frames.

    Returns:
        ``None`` when plain causal attention is exact (the window does not bind), else ``(1, 1, T, T)``: frame ``t``
        attends to frames ``t - W + 1 .. t``.
    """
    if context_frames is None or num_frames <= context_frames:
        return None
    time = torch.arange(num_frames, device=device)
    allowed = (time[None, :] <= time[:, None]) & (time[None, :] > time[:, None] - context_frames)
    return allowed[None, None]


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

    def forward(
        self, x: Tensor, cache: KVCache | None = None, layer: int = 0, key_mask: Tensor | None = None
    ) -> Tensor:
        """Run the block over a clip, or over one new frame after a cache.

        Args:
            x: ``(B, T, S, D)`` tokens: a whole clip (``cache`` is None; causal within the clip), or ``T = 1`` new
                frame at time ``cache.next_time``.
            cache: temporal keys/values of the frames before ``x``. This call writes its frame's keys/values into the
                cache's free slot (:meth:`KVCache.write`) and attends over every slot; :meth:`KVCache.commit` then
                keeps them, or the next write replaces them (MaskGIT's passes over one frame).
            layer: this block's index in the stack (its slot buffers in ``cache``).
            key_mask: ``((B S), 1, 1, slots)`` bool from :meth:`KVCache.key_mask`, or None when every slot counts.

        Returns:
            The updated tokens ``(B, T, S, D)``.
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
        start = 0 if cache is None else cache.next_time
        if cache is not None and t != 1:
            raise ValueError(f"a cached block takes one new frame at a time, got {t}")
        # Only the new frames are rotated: cached keys already are, at their own absolute times.
        cos, sin = _rope_cos_sin(t, self.head_dim, self.rope_base, x.device, start=start)
        q, k_new = _apply_rope(q, cos, sin), _apply_rope(k_new, cos, sin)
        if cache is None:
            mask = temporal_attention_mask(t, self.context_frames, x.device)
            h = F.scaled_dot_product_attention(q, k_new, v_new, attn_mask=mask, is_causal=mask is None and t > 1)
        else:
            keys, values = cache.write(layer, k_new, v_new)
            h = F.scaled_dot_product_attention(q, keys, values, attn_mask=key_mask)
        x = x + rearrange(self.temporal.output(h), "(b s) t d -> b t s d", b=b)

        return x + self.ffn(self.norm_ffn(x))


class KVCache:
    """Temporal key/value cache of an :class:`STTransformer` for a batch of independent streams (e.g. envs).

    Only temporal attention crosses frames, so caching each layer's temporal keys/values of completed frames is
    enough to compute a new frame exactly. The cache is a sliding window over the last ``context_frames - 1``
    frames, kept in a **ring** of ``context_frames`` slots per layer: the frame being computed writes into the free
    slot, :meth:`commit` makes it the newest frame and frees the oldest one's slot. Nothing already cached is ever
    copied, concatenated or re-rotated.

    * **Times.** Keys are stored rotated at their frame's absolute time in the stream (``times``); RoPE scores depend
      only on time differences, so slot order does not matter and the window can slide without touching the keys.
    * **Streams.** All streams advance in lock-step (one time per frame). A stream can start a new episode at any
      time via :meth:`reset`, which marks its slots invalid so that attention ignores them, or take a multi-frame
      prompt from another cache via :meth:`load_streams`.
    * **Unbounded windows** (``context_frames=None``) grow the ring when it is full.

    Memory: ``2 * num_layers * B * S * heads * head_dim * context_frames`` elements.

    Attributes:
        keys: per layer, ``((B S), heads, slots, head_dim)`` rotated keys, or ``None`` before the first frame.
        values: per layer, like ``keys``.
        times: per slot, the absolute time of the frame it holds, or ``None`` for a free slot.
        valid: ``(B, slots)`` bool, True where the slot holds a frame of the stream's current episode.
        next_time: absolute time of the next frame.
    """

    def __init__(
        self, num_layers: int, batch_size: int, context_frames: int | None, head_dim: int, rope_base: float
    ) -> None:
        self.batch_size = batch_size
        self.max_frames = None if context_frames is None else max(context_frames - 1, 0)
        self.head_dim = head_dim
        self.rope_base = rope_base
        self.keys: list[Tensor | None] = [None] * num_layers
        self.values: list[Tensor | None] = [None] * num_layers
        self.times: list[int | None] = [None] * (1 if self.max_frames is None else self.max_frames + 1)
        self.valid: Tensor | None = None
        self.next_time = 0

    @property
    def num_frames(self) -> int:
        """Number of cached frames (slots holding a frame, valid or not)."""
        return sum(t is not None for t in self.times)

    def _free_slot(self) -> int:
        """Index of a free slot; an unbounded ring grows by one when full."""
        for i, time in enumerate(self.times):
            if time is None:
                return i
        self.times.append(None)
        if self.valid is not None:
            self.valid = F.pad(self.valid, (0, 1), value=False)
        return len(self.times) - 1

    def key_mask(self, spatial: int, device: torch.device) -> Tensor | None:
        """Which slots the next frame attends to: its stream's valid frames and its own (free) slot.

        Returns:
            ``((B S), 1, 1, slots)`` bool, or ``None`` when every slot counts.
        """
        slot = self._free_slot()
        if self.valid is None:
            valid = torch.zeros(self.batch_size, len(self.times), dtype=torch.bool, device=device)
        else:
            valid = self.valid.clone()
        valid[:, slot] = True
        if bool(valid.all()):
            return None
        return repeat(valid, "b k -> (b s) 1 1 k", s=spatial)

    def write(self, layer: int, keys: Tensor, values: Tensor) -> LayerKV:
        """Store one new frame's rotated keys and values ``((B S), heads, 1, head_dim)`` in the free slot.

        Returns:
            The layer's whole buffers ``((B S), heads, slots, head_dim)``.
        """
        slot = self._free_slot()
        buffers = []
        for store, new in ((self.keys, keys), (self.values, values)):
            buffer = self._buffer(store, layer, new, new.shape[0])
            buffer[:, :, slot : slot + 1] = new.detach()
            buffers.append(buffer)
        return buffers[0], buffers[1]

    def _buffer(self, store: list[Tensor | None], layer: int, like: Tensor, rows: int) -> Tensor:
        """``store[layer]`` with ``rows`` rows, a slot per entry of :attr:`times` and ``like``'s dtype.

        Allocated on first use and grown (history copied over) when the ring grows or the dtype changes.

        Args:
            store: :attr:`keys` or :attr:`values`.
            layer: the layer's index.
            like: keys or values ``(n S, heads, T, head_dim)`` about to be stored (this cache's or a source's).
            rows: ``B * S``, this cache's rows.
        """
        buffer = store[layer]
        if buffer is None or buffer.shape[2] < len(self.times) or buffer.dtype != like.dtype:
            grown = like.new_zeros(rows, like.shape[1], len(self.times), like.shape[3])
            if buffer is not None:
                grown[:, :, : buffer.shape[2]] = buffer
            buffer = grown
            store[layer] = buffer
        return buffer

    def commit(self) -> None:
        """Keep the frame just written as the newest frame of every stream; the oldest leaves the window."""
        slot = self._free_slot()
        self.times[slot] = self.next_time
        self.next_time += 1
        if self.valid is None:
            self.valid = torch.zeros(self.batch_size, len(self.times), dtype=torch.bool, device=self._device())
        self.valid[:, slot] = True
        if self.max_frames is not None and self.num_frames > self.max_frames:
            oldest = min((t, i) for i, t in enumerate(self.times) if t is not None)[1]
            self.times[oldest] = None
            self.valid[:, oldest] = False

    def _device(self) -> torch.device:
        buffer = next((k for k in self.keys if k is not None), None)
        return torch.device("cpu") if buffer is None else buffer.device

    def reset(self, streams: Tensor) -> None:
        """Forget the history of the streams where ``streams`` (B,) bool is True (start of a new episode).

        When every stream restarts, the cache starts over at time 0, so that a seeded episode is bit-identical
        however long the cache ran before (RoPE is relative only up to float round-off of the absolute angles).
        """
        if bool(streams.all()):
            self.clear()
        elif self.valid is not None:
            self.valid = self.valid & ~streams.to(self.valid.device)[:, None]

    def clear(self) -> None:
        """Forget everything and start over at time 0 (the buffers are kept for reuse)."""
        self.times = [None] * len(self.times)
        self.valid = None
        self.next_time = 0

    def _rotate(self, keys: Tensor, shift: int) -> Tensor:
        """``keys`` rotated ``shift`` time steps further (rotations compose: ``R(a) R(b) = R(a + b)``)."""
        if shift == 0:
            return keys
        cos, sin = _rope_cos_sin(1, self.head_dim, self.rope_base, keys.device, start=shift)
        return _apply_rope(keys, cos, sin)

    def load_streams(self, streams: Tensor, source: KVCache) -> None:
        """Replace the history of some streams by another cache's (an env restarting from a multi-frame prompt).

        ``source`` holds the ``n = streams.sum()`` restarting streams, in order, e.g. a fresh cache that the prompt
        frames were appended to. Its ``m`` frames become those streams' frames at the ``m`` latest times of this
        cache (slots are claimed for times this cache has not seen yet, invalid for the other streams), their older
        frames turn invalid, and the other streams are untouched. The loaded keys are rotated by the difference of
        the two times, so every stream still sees exact relative positions.

        Args:
            streams: ``(B,)`` bool, True for the streams to overwrite.
            source: cache of ``n`` streams with the same layers, heads and head size.

        Raises:
            ValueError: If the stream count or the layer count does not match, or the source holds more frames than
                this window.
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
        num_new = source.num_frames
        if n == 0 or source.valid is None or num_new == 0:
            self.reset(streams)
            return
        if n == self.batch_size:  # every stream restarts: start over at the source's times (no rotation)
            self.clear()
            self.next_time = source.next_time
        if self.max_frames is not None and num_new > self.max_frames:
            raise ValueError(f"source holds {num_new} frames, more than this window's {self.max_frames}")
        device = source.valid.device
        streams = streams.to(device)
        if self.valid is None:
            self.valid = torch.zeros(self.batch_size, len(self.times), dtype=torch.bool, device=device)
        # Source frames, oldest first, and the times they take here: the latest num_new times before next_time.
        source_slots = sorted((t, i) for i, t in enumerate(source.times) if t is not None)
        targets = []
        for j, (source_time, source_slot) in enumerate(source_slots):
            time = self.next_time - num_new + j
            if time not in self.times:  # a time this cache never had: claim a free slot, invalid for every stream
                slot = self._free_slot()
                self.times[slot] = time
                self.valid[:, slot] = False
            targets.append((self.times.index(time), time - source_time, source_slot))
        spatial = source.keys[0].shape[0] // n  # type: ignore[union-attr]
        rows = repeat(streams, "b -> (b s)", s=spatial)
        for i in range(len(self.keys)):
            for store, loaded in ((self.keys, source.keys[i]), (self.values, source.values[i])):
                buffer = self._buffer(store, i, loaded, rows.shape[0])  # type: ignore[arg-type]
                block = buffer[rows]
                for slot, shift, source_slot in targets:
                    frame = loaded[:, :, source_slot : source_slot + 1]  # type: ignore[index]
                    block[:, :, slot : slot + 1] = self._rotate(frame, shift) if store is self.keys else frame
                buffer[rows] = block
        valid = self.valid.clone()
        valid[streams] = False
        for slot, _, source_slot in targets:
            valid[streams, slot] = source.valid[:, source_slot]
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
        block = self.blocks[0]
        return KVCache(len(self.blocks), batch_size, self.context_frames, block.head_dim, block.rope_base)

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
        if block_inputs is not None and len(block_inputs) != len(self.blocks):
            raise ValueError(f"need one block input per block ({len(self.blocks)}), got {len(block_inputs)}")
        if cache is None:
            if update_cache:
                raise ValueError("update_cache=True needs a cache")
            for i, block in enumerate(self.blocks):
                if block_inputs is not None:
                    x = x + block_inputs[i]
                if self.gradient_checkpointing and torch.is_grad_enabled():
                    x = self._gradient_checkpointing_func(block, x)
                else:
                    x = block(x)
            return self.norm(x)
        t = x.shape[1]
        if t > 1 and not update_cache:
            raise ValueError(f"{t} new frames after a cache need update_cache=True (each attends to the ones before)")
        # Frame by frame through the ring: exactly the causal, windowed attention of the uncached path.
        outputs = []
        for step in range(t):
            frame = x[:, step : step + 1]
            key_mask = cache.key_mask(x.shape[2], x.device)
            for i, block in enumerate(self.blocks):
                if block_inputs is not None:
                    inputs = block_inputs[i]
                    frame = frame + (inputs[:, step : step + 1] if inputs.shape[1] == t else inputs)
                frame = block(frame, cache, i, key_mask)
            if update_cache:
                cache.commit()
            outputs.append(frame)
        return self.norm(outputs[0] if t == 1 else torch.cat(outputs, dim=1))


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
