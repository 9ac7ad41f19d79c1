"""GE-Sim multi-view flow-matching DiT, assembled from diffusers' Cosmos transformer pieces.

The network follows the Cosmos-Predict2-2B backbone that GE-Sim (Genie-Envisioner) fine-tunes:

* patch embedding ``(1, 2, 2)`` without bias (``CosmosPatchEmbed``), 3-D RoPE (``CosmosRotaryPosEmbed``)
  and no learnable position embedding;
* sinusoidal timestep embedding with AdaLN-LoRA conditioning (``CosmosEmbedding``), evaluated per latent
  frame so that memory frames can sit at ``t ~ 1e-4`` while future frames are noisy;
* ``CosmosTransformerBlock`` blocks (self-attention, cross-attention, GELU MLP, QK RMSNorm);
* ``CosmosAdaLayerNorm`` + linear output head predicting the flow velocity ``v = eps - x0``.

GE-Sim adds, and so does this module:

* views stacked in the batch ``(B, V, ...) -> ((B V), ...)``;
* a learned view embedding, passed through SiLU + Linear and added to the AdaLN term ``temb``;
* joint attention over all views in every ``cross_view_every``-th block (see
  :class:`~genie_env.models.gesim.attention.CrossViewAttnProcessor`);
* 27 input channels per view, built by :func:`assemble_inputs`.

Optionally (``memory_attention="causal"``, not in GE-Sim), memory frames attend only to memory frames. Their
features then never depend on the frames being denoised, so a sampler computes them once per generated frame
(:meth:`MultiViewDiT.encode_memory`) and every Euler step runs the future frames alone against the cached
memory keys and values (``forward(..., memory=...)``), with the same result as the full masked pass.

Task conditioning replaces GE-Sim's T5-11B prompt with a learned table of a few context tokens per task.
Submodule names match ``CosmosTransformer3DModel`` so Cosmos weights can be loaded into the shared parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.transformer_cosmos import (
    CosmosAdaLayerNorm,
    CosmosEmbedding,
    CosmosPatchEmbed,
    CosmosRotaryPosEmbed,
    CosmosTransformerBlock,
)
from einops import rearrange, repeat
from torch import nn

from genie_env.models.gesim.attention import CrossViewAttnProcessor

LATENT_CHANNELS = 16
"""Wan 2.1 VAE latent channels (the part of the input that is denoised)."""
TRAJ_CHANNELS = 3
"""Trajectory ("Pose2Image") map channels, RGB in [-1, 1]."""
RAY_CHANNELS = 6
"""Ray map channels: origin xyz (metres, robot base frame), then unit direction xyz."""
INPUT_CHANNELS = LATENT_CHANNELS + TRAJ_CHANNELS + RAY_CHANNELS + 2
"""All per-view input channels: latents, trajectory, rays, condition mask, padding mask (= 27)."""
COND_CHANNEL = LATENT_CHANNELS + TRAJ_CHANNELS + RAY_CHANNELS
"""Index of the condition-mask channel (1 on memory frames) in the assembled input."""
MEMORY_ATTENTION = ("full", "causal")


@dataclass
class MemoryKV:
    """Every block's self-attention keys and values of a window's memory frames (:meth:`MultiViewDiT.encode_memory`).

    Attributes:
        keys_values: Per block ``(keys, values)``, each ``((B V), heads, M * h * w, head_dim)``, after QK-norm and
            RoPE, in the order of the blocks.
        num_frames: Memory frames ``M`` (the future frames' positions start after them).
        batch: ``B * V``, the stacked batch they were computed for.
    """

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    num_frames: int
    batch: int


def assemble_inputs(
    latents: torch.Tensor, traj: torch.Tensor, ray: torch.Tensor, cond_mask: torch.Tensor
) -> torch.Tensor:
    """Stacks the per-view network input in GE-Sim's channel order.

    Channel order (27 in total): ``[0:16]`` latents, ``[16:19]`` trajectory map, ``[19:25]`` ray map
    (origin then direction), ``[25]`` condition mask (1 on memory frames), ``[26]`` padding mask (zeros).
    The padding-mask channel is built here rather than through diffusers' ``concat_padding_mask``, which
    needs torchvision; in GE-Sim it is always zero anyway.

    Args:
        latents: Normalised video latents, ``(B, V, 16, T, H, W)``; memory frames clean, future frames noisy.
        traj: Trajectory maps at latent resolution, ``(B, V, 3, T, H, W)``.
        ray: Ray maps at latent resolution, ``(B, V, 6, T, H, W)``.
        cond_mask: Per-frame memory indicator, ``(B, T)``, bool or {0, 1}; shared by all views.

    Returns:
        Network input, ``(B, V, 27, T, H, W)``, in the dtype of ``latents``.

    Raises:
        ValueError: If channel counts or the other dimensions disagree.
    """
    if latents.ndim != 6 or latents.shape[2] != LATENT_CHANNELS:
        raise ValueError(f"latents must be (B, V, {LATENT_CHANNELS}, T, H, W), got {tuple(latents.shape)}")
    b, v, _, t, h, w = latents.shape
    for name, x, c in (("traj", traj, TRAJ_CHANNELS), ("ray", ray, RAY_CHANNELS)):
        if tuple(x.shape) != (b, v, c, t, h, w):
            raise ValueError(f"{name} must have shape {(b, v, c, t, h, w)}, got {tuple(x.shape)}")
    if tuple(cond_mask.shape) != (b, t):
        raise ValueError(f"cond_mask must have shape {(b, t)}, got {tuple(cond_mask.shape)}")

    mask = repeat(cond_mask.to(latents.dtype), "b t -> b v 1 t h w", v=v, h=h, w=w)
    padding = torch.zeros_like(mask)
    return torch.cat([latents, traj.to(latents.dtype), ray.to(latents.dtype), mask, padding], dim=2)


class MultiViewDiT(ModelMixin, ConfigMixin):
    """Multi-view video DiT predicting the flow-matching velocity of future latent frames.

    Defaults are the published GE-Sim / Cosmos-Predict2-2B sizes (about 2B parameters). Conventions:
    inputs are ``(B, V, C, T, H, W)`` at latent resolution; timesteps are flow times ``t`` in [0, 1]
    (not x1000), one per latent frame; the output is the velocity ``v = eps - x0`` for all
    ``out_channels`` latent channels at every frame (the loss ignores the memory frames).

    Args:
        in_channels: Per-view input channels, including both mask channels (27 for GE-Sim).
        out_channels: Predicted channels (the 16 latent channels).
        num_attention_heads: Attention heads.
        attention_head_dim: Channels per head; hidden size is ``heads * head_dim``.
        num_layers: Number of ``CosmosTransformerBlock`` blocks.
        mlp_ratio: MLP hidden size over hidden size.
        text_embed_dim: Width of the cross-attention context (T5-11B: 1024).
        adaln_lora_dim: Bottleneck width of the AdaLN-LoRA modulation.
        max_size: Maximum latent ``(T, H, W)`` supported by RoPE.
        patch_size: Patch size ``(p_t, p_h, p_w)``; ``p_t`` must be 1 for per-frame timesteps.
        rope_scale: NTK RoPE scaling for ``(t, h, w)``; GE-Sim uses ``(1, 3, 3)``.
        rope_fps: Frame rate passed to the RoPE (temporal positions scaled by ``24 / rope_fps``); GE-Sim's
            inference default is 16. ``None`` disables the scaling.
        max_views: Size of the view-embedding table (head, left hand, right hand).
        cross_view_every: Blocks ``0, k, 2k, ...`` attend jointly across views. ``0`` disables cross-view
            attention altogether (with the published rule block 0 is always joint, so a large ``k`` alone
            would not disable it).
        num_tasks: Number of task ids; id ``num_tasks`` is the learned "no task" entry used for dropout.
        num_task_tokens: Context tokens per task in the task-embedding table.
        target: What the flow carries on future frames (read by :mod:`~genie_env.models.gesim.flow`):
            ``"latent"`` (GE-Sim: the future latents themselves) or ``"residual"`` (their change from the newest
            memory latent, times ``residual_scale``), under which repeating the last frame is the zero target
            and the network's capacity goes to what moves.
        residual_scale: Multiplier of the residual so that it has about unit scale, as flow matching assumes
            (frame-to-frame latent changes on our Fetch recordings have a standard deviation of about 0.25).
        memory_attention: ``"full"`` (GE-Sim: every token attends to every token) or ``"causal"`` (memory
            frames, read from the condition-mask channel, attend only to memory frames), which lets samplers cache
            the memory's keys and values across Euler steps (:meth:`encode_memory`).
    """

    _supports_gradient_checkpointing = True
    _skip_layerwise_casting_patterns = ["patch_embed", "norm"]
    _no_split_modules = ["CosmosTransformerBlock"]

    @register_to_config
    def __init__(
        self,
        in_channels: int = INPUT_CHANNELS,
        out_channels: int = LATENT_CHANNELS,
        num_attention_heads: int = 16,
        attention_head_dim: int = 128,
        num_layers: int = 28,
        mlp_ratio: float = 4.0,
        text_embed_dim: int = 1024,
        adaln_lora_dim: int = 256,
        max_size: tuple[int, int, int] = (128, 240, 240),
        patch_size: tuple[int, int, int] = (1, 2, 2),
        rope_scale: tuple[float, float, float] = (1.0, 3.0, 3.0),
        rope_fps: float | None = 16.0,
        max_views: int = 3,
        cross_view_every: int = 3,
        num_tasks: int = 1,
        num_task_tokens: int = 4,
        target: str = "latent",
        residual_scale: float = 4.0,
        memory_attention: str = "full",
    ) -> None:
        """Builds the network; the arguments are documented on the class."""
        super().__init__()
        if target not in ("latent", "residual"):
            raise ValueError(f"target must be 'latent' or 'residual', got {target=}")
        if memory_attention not in MEMORY_ATTENTION:
            raise ValueError(f"memory_attention must be one of {MEMORY_ATTENTION}, got {memory_attention=}")
        if not residual_scale > 0:
            raise ValueError(f"residual_scale must be > 0, got {residual_scale=}")
        if patch_size[0] != 1:
            raise ValueError(f"Per-frame timesteps need a temporal patch of 1, got {patch_size=}")
        if cross_view_every < 0:
            raise ValueError(f"cross_view_every must be >= 0, got {cross_view_every=}")
        hidden_size = num_attention_heads * attention_head_dim

        # 1. Patchify (no bias, as in Cosmos) and 3-D RoPE over per-head channels.
        self.patch_embed = CosmosPatchEmbed(in_channels, hidden_size, patch_size, bias=False)
        self.rope = CosmosRotaryPosEmbed(
            hidden_size=attention_head_dim, max_size=max_size, patch_size=patch_size, rope_scale=rope_scale
        )

        # 2. Conditioning: timestep (AdaLN-LoRA), view (added to temb), task (cross-attention context).
        self.time_embed = CosmosEmbedding(hidden_size, hidden_size)
        self.view_embed = nn.Embedding(max_views, hidden_size)
        # Maps to the same 3 * hidden (shift, scale, gate) AdaLN-LoRA term that the timestep produces.
        self.view_ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size, bias=False))
        self.task_embed = nn.Embedding(num_tasks + 1, num_task_tokens * text_embed_dim)

        # 3. Cosmos blocks; joint-view attention swapped in on the selected blocks' self-attention.
        self.transformer_blocks = nn.ModuleList(
            [
                CosmosTransformerBlock(
                    num_attention_heads=num_attention_heads,
                    attention_head_dim=attention_head_dim,
                    cross_attention_dim=text_embed_dim,
                    mlp_ratio=mlp_ratio,
                    adaln_lora_dim=adaln_lora_dim,
                    qk_norm="rms_norm",
                    out_bias=False,
                )
                for _ in range(num_layers)
            ]
        )
        # Causal memory needs the mask and the cache in every block's self-attention; per-view blocks keep one view.
        blocks = range(num_layers) if memory_attention == "causal" else self.cross_view_block_ids
        for idx in blocks:
            self.transformer_blocks[idx].attn1.set_processor(CrossViewAttnProcessor())

        # 4. Output head: AdaLN (shift, scale) + linear to (p_h, p_w, p_t, C) per token, the Cosmos layout.
        self.norm_out = CosmosAdaLayerNorm(hidden_size, adaln_lora_dim)
        self.proj_out = nn.Linear(
            hidden_size, patch_size[0] * patch_size[1] * patch_size[2] * out_channels, bias=False
        )

        self.gradient_checkpointing = False

    @property
    def cross_view_block_ids(self) -> list[int]:
        """Indices of the blocks whose self-attention spans all views (``idx % k == 0``)."""
        k = self.config.cross_view_every
        return [] if k == 0 else list(range(0, self.config.num_layers, k))

    @property
    def null_task_id(self) -> int:
        """Task id of the learned "no task" context, used for task dropout and unconditional calls."""
        return self.config.num_tasks

    def _set_num_views(self, num_views: int) -> None:
        # The Cosmos block calls attn1 without extra kwargs, so the view count travels on the processor.
        for idx in self.cross_view_block_ids:
            processor = self.transformer_blocks[idx].attn1.processor
            if isinstance(processor, CrossViewAttnProcessor):
                processor.num_views = num_views

    def _context(
        self, batch_size: int, task_ids: torch.Tensor | None, encoder_hidden_states: torch.Tensor | None
    ) -> torch.Tensor:
        if encoder_hidden_states is not None:
            if encoder_hidden_states.shape[0] != batch_size or encoder_hidden_states.ndim != 3:
                raise ValueError(
                    f"encoder_hidden_states must be (B={batch_size}, S, D), got {tuple(encoder_hidden_states.shape)}"
                )
            return encoder_hidden_states
        if task_ids is None:
            task_ids = torch.full((batch_size,), self.null_task_id, device=self.task_embed.weight.device)
        if tuple(task_ids.shape) != (batch_size,):
            raise ValueError(f"task_ids must have shape {(batch_size,)}, got {tuple(task_ids.shape)}")
        return rearrange(self.task_embed(task_ids), "b (s d) -> b s d", s=self.config.num_task_tokens)

    @property
    def causal_memory(self) -> bool:
        """Whether memory frames attend only to memory frames (``memory_attention == "causal"``)."""
        return self.config.memory_attention == "causal"

    def _processors(self) -> list[CrossViewAttnProcessor]:
        """The self-attention processors carrying the memory mask and cache (every block's, in causal mode)."""
        return [block.attn1.processor for block in self.transformer_blocks]  # type: ignore[misc]

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        view_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        return_dict: bool = True,
        memory: MemoryKV | None = None,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predicts the velocity of every latent frame of every view.

        Args:
            hidden_states: Assembled input from :func:`assemble_inputs`, ``(B, V, in_channels, T, H, W)``.
            timestep: Flow time per latent frame ``(B, T)`` (memory frames near 0, e.g.
                ``1e-4 / (1 + 1e-4)``), or ``(B,)`` for one time shared by all frames.
            view_ids: View index per stacked view, ``(B, V)`` long; defaults to ``0..V-1`` (head, left,
                right hand in GE-Sim's order).
            task_ids: Task index per sample, ``(B,)`` long; ``None`` uses :attr:`null_task_id`.
            encoder_hidden_states: Optional precomputed text context ``(B, S, text_embed_dim)``, e.g. T5-11B
                prompt embeddings from a locally available encoder; it overrides ``task_ids``. This is the
                hook for GE-Sim's prompt conditioning (no encoder is bundled or downloaded here).
            return_dict: Return a ``Transformer2DModelOutput`` instead of a tuple.
            memory: With ``memory_attention="causal"`` only: the cached memory of :meth:`encode_memory`;
                ``hidden_states`` then holds only the frames after it (the future frames), whose positions
                continue after the memory's.

        Returns:
            Velocity ``v = eps - x0``, ``(B, V, out_channels, T, H, W)``, in ``.sample`` or as a 1-tuple.

        Raises:
            ValueError: On shape mismatches, more views than ``max_views``, or a ``memory`` the network cannot use.
        """
        x, embedded_t, temb, shape = self._trunk(
            hidden_states, timestep, view_ids, task_ids, encoder_hidden_states, memory=memory
        )
        views, frames, post_h, post_w = shape
        _, p_h, p_w = self.config.patch_size

        # 5. Output head and unpatchify; proj_out packs each token as (p_h, p_w, p_t, C) like Cosmos.
        x = self.proj_out(self.norm_out(x, embedded_t, temb))
        out = rearrange(
            x,
            "(b v) (t h w) (ph pw pt c) -> b v c (t pt) (h ph) (w pw)",
            v=views,
            t=frames,
            h=post_h,
            w=post_w,
            ph=p_h,
            pw=p_w,
            pt=1,
        )
        if not return_dict:
            return (out,)
        return Transformer2DModelOutput(sample=out)

    def encode_memory(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        view_ids: torch.Tensor | None = None,
        task_ids: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> MemoryKV:
        """Runs the memory frames alone and keeps every block's keys and values (``memory_attention="causal"``).

        Args:
            hidden_states: Assembled input of the memory frames only, ``(B, V, in_channels, M, H, W)``, condition
                mask 1 on every frame.
            timestep, view_ids, task_ids, encoder_hidden_states: As :meth:`forward`, for these frames.

        Returns:
            The :class:`MemoryKV` to pass to :meth:`forward` for the frames that follow (any number of calls).

        Raises:
            ValueError: If the network attends fully (nothing may be cached) or a frame is not memory.
        """
        if not self.causal_memory:
            raise ValueError(
                "encode_memory needs memory_attention='causal': with full attention memory features "
                "depend on the frames being denoised"
            )
        shaped = hidden_states.ndim == 6 and hidden_states.shape[2] > COND_CHANNEL
        if shaped and not bool((hidden_states[:, :, COND_CHANNEL] > 0.5).all()):
            raise ValueError("encode_memory takes memory frames only (condition mask 1 on every frame)")
        records: list[tuple[torch.Tensor, torch.Tensor]] = []
        for processor in self._processors():
            processor.record = records
        try:
            self._trunk(hidden_states, timestep, view_ids, task_ids, encoder_hidden_states)
        finally:
            for processor in self._processors():
                processor.record = None
        batch = hidden_states.shape[0] * hidden_states.shape[1]
        return MemoryKV(keys_values=records, num_frames=int(hidden_states.shape[3]), batch=batch)

    def _trunk(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        view_ids: torch.Tensor | None,
        task_ids: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        memory: MemoryKV | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, int, int, int]]:
        """Embedding and blocks: tokens ``((B V), T h w, D)``, the AdaLN terms, and ``(V, T, h, w)``."""
        if hidden_states.ndim != 6 or hidden_states.shape[2] != self.config.in_channels:
            raise ValueError(
                f"hidden_states must be (B, V, {self.config.in_channels}, T, H, W), got {tuple(hidden_states.shape)}"
            )
        batch, views, _, frames, height, width = hidden_states.shape
        _, p_h, p_w = self.config.patch_size
        if views > self.config.max_views:
            raise ValueError(f"Got {views} views but {self.config.max_views=}")
        if height % p_h or width % p_w:
            raise ValueError(f"Latent size {(height, width)} is not divisible by the patch {(p_h, p_w)}")
        if timestep.ndim == 1:
            timestep = repeat(timestep, "b -> b t", t=frames)
        if tuple(timestep.shape) != (batch, frames):
            raise ValueError(f"timestep must have shape {(batch,)} or {(batch, frames)}, got {tuple(timestep.shape)}")
        if view_ids is None:
            view_ids = repeat(torch.arange(views, device=hidden_states.device), "v -> b v", b=batch)
        if tuple(view_ids.shape) != (batch, views):
            raise ValueError(f"view_ids must have shape {(batch, views)}, got {tuple(view_ids.shape)}")
        if memory is not None:
            if not self.causal_memory:
                raise ValueError("memory= needs memory_attention='causal'")
            if memory.batch != batch * views or len(memory.keys_values) != len(self.transformer_blocks):
                raise ValueError(
                    f"memory holds {memory.batch} stacked views and {len(memory.keys_values)} blocks, the input "
                    f"{batch * views} and the network {len(self.transformer_blocks)}"
                )
        past = 0 if memory is None else memory.num_frames

        # 1. Views go into the batch; RoPE positions are the same for every view. Frames after a cached memory
        # take the positions after it.
        x = rearrange(hidden_states, "b v c t h w -> (b v) c t h w")
        post_h, post_w = height // p_h, width // p_w
        if past:
            cos, sin = self.rope(x.new_empty(1, 1, past + frames, height, width), fps=self.config.rope_fps)
            rotary_emb = (cos[past * post_h * post_w :], sin[past * post_h * post_w :])
        else:
            rotary_emb = self.rope(x, fps=self.config.rope_fps)
        x = rearrange(self.patch_embed(x), "n t h w d -> n (t h w) d")

        # 2. Per-frame timestep embedding plus the view term, broadcast to every token of its frame.
        # temb: (BV*T, 3D) AdaLN-LoRA term, embedded_t: (BV*T, D) RMS-normed sinusoid.
        temb, embedded_t = self.time_embed(x, repeat(timestep, "b t -> (b v t)", v=views))
        view_term = self.view_ada(self.view_embed(rearrange(view_ids, "b v -> (b v)")))  # (BV, 3D)
        temb = rearrange(temb, "(n t) d -> n t d", t=frames) + view_term[:, None]
        temb = repeat(temb, "n t d -> n (t h w) d", h=post_h, w=post_w)
        embedded_t = repeat(embedded_t, "(n t) d -> n (t h w) d", t=frames, h=post_h, w=post_w)

        # 3. One shared context per sample; cross-attention is per query, so repeating over views equals
        # GE-Sim's concatenation of all views' queries against one prompt.
        context = repeat(self._context(batch, task_ids, encoder_hidden_states), "b s d -> (b v) s d", v=views)
        context = context.to(x.dtype)

        # 4. Blocks (attention mask and extra position embedding unused, as in GE-Sim; causal memory masks its
        # own self-attention through the processors).
        self._set_num_views(views)
        memory_tokens = None
        if self.causal_memory and memory is None:
            is_memory = hidden_states[:, 0, COND_CHANNEL, :, 0, 0] > 0.5  # (B, T)
            if bool(is_memory.any()) and not bool(is_memory.all()):
                memory_tokens = repeat(is_memory, "b t -> (b v) (t h w)", v=views, h=post_h, w=post_w)
        for i, block in enumerate(self.transformer_blocks):
            run = block
            if self.causal_memory:
                # The state goes in with the call, so gradient checkpointing's recomputation sees it too.
                past_kv = None if memory is None else memory.keys_values[i]
                run = partial(_with_attention_state, block, memory_tokens, past_kv)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(run, x, context, embedded_t, temb, rotary_emb)
            else:
                x = run(x, context, embedded_t, temb, rotary_emb)
        return x, embedded_t, temb, (views, frames, post_h, post_w)


def _with_attention_state(
    block: CosmosTransformerBlock,
    memory_tokens: torch.Tensor | None,
    past: tuple[torch.Tensor, torch.Tensor] | None,
    *args: torch.Tensor,
) -> torch.Tensor:
    """Runs ``block`` with its self-attention processor holding this pass's memory mask and cached memory."""
    processor: CrossViewAttnProcessor = block.attn1.processor  # type: ignore[assignment]
    processor.memory_tokens, processor.past = memory_tokens, past
    try:
        return block(*args)
    finally:
        processor.memory_tokens = processor.past = None
