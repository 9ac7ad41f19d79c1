"""Genie dynamics model: a MaskGIT ST-transformer over video tokens and latent actions (paper Sec. 2.1).

Inputs are the tokenizer's ids ``z`` ``(B, T, h, w)`` and the LAM's action ids ``a`` ``(B, T - 1)`` (``a_t`` explains
``z_t -> z_{t+1}``). Every token of frame ``t`` gets

    token_embedding(z_t) + spatial_pos + action_embedding(a_{t-1})

where frame 0 -- which no action produced -- uses a dedicated learned "no action" row. Actions enter as additive
embeddings, the variant the paper found more controllable than concatenation; they are integer ids, so no gradient
reaches the LAM (the paper's stop-gradient). Time is causal: the logits of frame ``t`` depend on tokens and actions
of frames ``<= t`` only.

Masking convention. The token vocabulary has ``codebook_size + 1`` rows; id ``mask_id == codebook_size`` is the
MASK token, never a real code. The output head has ``codebook_size`` logits, so MASK can never be predicted.

Training (MaskGIT, Chang et al. 2022): per sample a rate ``r ~ U(0.5, 1)`` is drawn and each token of frames ``>= 1``
is replaced by MASK with probability ``r``; frame 0 is never masked. Cross-entropy is taken on the masked positions
only, against the **original** ids (the mask-filled copy is used only as input -- overwriting the targets is a
bug shipped by one public re-implementation).

Generation (see :mod:`~genie_env.models.genie.maskgit`) predicts one frame at a time. Because only temporal
attention crosses frames and it is causal, the temporal keys/values of finished frames never change; a
:class:`DynamicsCache` stores them (sliding window of ``context_frames - 1`` frames; paper: 16 frames of memory)
so a new frame costs one frame of compute per MaskGIT step, whatever the history length.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import Tensor, nn

from genie_env.models.genie.st_transformer import KVCache, STTransformer, init_weights

# The generation-time cache of the dynamics model is the generic ST-transformer cache: per layer the temporal
# keys/values of the last ``context_frames - 1`` finished frames, plus per-env validity for episode resets.
DynamicsCache = KVCache

NO_ACTION = -1
"""Action id meaning "no action produced this frame" (the first frame of an episode)."""


class DynamicsModel(ModelMixin, ConfigMixin):
    """MaskGIT dynamics model.

    Args:
        codebook_size: tokenizer codebook size ``K``; real ids are ``[0, K)`` and ``K`` is MASK.
        num_actions: latent action vocabulary ``|A|``.
        grid_height: token grid height ``h``.
        grid_width: token grid width ``w``.
        dim: model width.
        depth: ST blocks.
        num_heads: attention heads.
        head_dim: per-head width.
        mlp_ratio: FFN hidden width as a multiple of ``dim``.
        qk_norm: RMSNorm on queries/keys (the paper's 10.1B model uses it).
        context_frames: temporal attention window, frames (paper: 16).
        mask_rate_min: lower end of the per-sample training mask rate.
        mask_rate_max: upper end of the per-sample training mask rate.
        rope_base: RoPE base for the time axis.
        action_every_block: also add a (per-block) action embedding to the tokens before every block, not only to
            the input. An action added once at the input can be washed out by depth (research/genie_impls.md §3:
            GenieRedux-G feeds actions to every layer); we saw ΔtPSNR@4 ~0 on Boxing with input-only actions.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        codebook_size: int = 1024,
        num_actions: int = 8,
        grid_height: int = 16,
        grid_width: int = 16,
        dim: int = 128,
        depth: int = 4,
        num_heads: int = 4,
        head_dim: int = 32,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        context_frames: int = 16,
        mask_rate_min: float = 0.5,
        mask_rate_max: float = 1.0,
        rope_base: float = 10_000.0,
        action_every_block: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= mask_rate_min <= mask_rate_max <= 1.0:
            raise ValueError(f"need 0 <= mask_rate_min <= mask_rate_max <= 1, got {mask_rate_min=} {mask_rate_max=}")
        self.token_embed = nn.Embedding(codebook_size + 1, dim)  # row codebook_size = MASK
        self.action_embed = nn.Embedding(num_actions + 1, dim)  # row num_actions = NO_ACTION
        self.pos = nn.Parameter(torch.zeros(grid_height * grid_width, dim))
        self.transformer = STTransformer(
            dim, depth, num_heads, head_dim, mlp_ratio, qk_norm, context_frames, rope_base
        )
        self.head = nn.Linear(dim, codebook_size)
        self.block_action_embed = (
            nn.ModuleList(nn.Embedding(num_actions + 1, dim) for _ in range(depth)) if action_every_block else None
        )
        self.apply(init_weights)
        nn.init.trunc_normal_(self.pos, std=0.02)

    @property
    def mask_id(self) -> int:
        """Id of the MASK token (``codebook_size``, one past the last real code)."""
        return self.config.codebook_size

    # -- embedding ------------------------------------------------------------------------------------------------

    @staticmethod
    def frame_actions(actions: Tensor) -> Tensor:
        """Transition actions ``(B, T - 1)`` -> per-frame actions ``(B, T)`` (``NO_ACTION`` for frame 0)."""
        first = actions.new_full((actions.shape[0], 1), NO_ACTION)
        return torch.cat([first, actions], dim=1)

    def _embed(self, tokens: Tensor, frame_actions: Tensor) -> Tensor:
        """Token ids ``(B, T, h, w)`` (may hold MASK) and per-frame actions ``(B, T)`` -> ``(B, T, h*w, dim)``."""
        cfg = self.config
        if tokens.ndim != 4 or tuple(tokens.shape[2:]) != (cfg.grid_height, cfg.grid_width):
            raise ValueError(f"tokens must be (B, T, {cfg.grid_height}, {cfg.grid_width}), got {tuple(tokens.shape)}")
        if frame_actions.shape != tokens.shape[:2]:
            raise ValueError(f"need one action per frame: {tuple(frame_actions.shape)} vs {tuple(tokens.shape[:2])}")
        action_rows = torch.where(frame_actions < 0, cfg.num_actions, frame_actions)
        x = self.token_embed(rearrange(tokens, "b t h w -> b t (h w)")) + self.pos
        return x + rearrange(self.action_embed(action_rows), "b t d -> b t 1 d")

    def _block_inputs(self, frame_actions: Tensor) -> list[Tensor] | None:
        """Per-block action embeddings ``(B, T, 1, dim)`` of per-frame actions ``(B, T)``, or ``None`` if off."""
        if self.block_action_embed is None:
            return None
        rows = torch.where(frame_actions < 0, self.config.num_actions, frame_actions)
        return [rearrange(embed(rows), "b t d -> b t 1 d") for embed in self.block_action_embed]

    def _head(self, x: Tensor) -> Tensor:
        """``(B, T, h*w, dim)`` -> logits ``(B, T, h, w, codebook_size)``."""
        return rearrange(self.head(x), "b t (h w) v -> b t h w v", h=self.config.grid_height)

    # -- full-sequence (training / reference) path ----------------------------------------------------------------

    def logits(self, tokens: Tensor, actions: Tensor) -> Tensor:
        """Logits for every position of a clip, recomputing the whole history.

        Args:
            tokens: ``(B, T, h, w)`` int64 ids in ``[0, codebook_size]`` (``codebook_size`` = MASK).
            actions: ``(B, T - 1)`` int64 latent actions; ``actions[:, t]`` leads from frame ``t`` to ``t + 1``.

        Returns:
            ``(B, T, h, w, codebook_size)`` logits; frame ``t`` depends only on frames and actions up to ``t``.
        """
        frame_actions = self.frame_actions(actions)
        x = self._embed(tokens, frame_actions)
        return self._head(self.transformer(x, block_inputs=self._block_inputs(frame_actions)))

    def mask_tokens(self, tokens: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw the MaskGIT training corruption.

        Args:
            tokens: ``(B, T, h, w)`` int64 clean ids.
            generator: RNG for the mask rates and positions.

        Returns:
            ``(inputs, mask)``: ``inputs`` is a *copy* of ``tokens`` with MASK at the ``mask`` positions; ``mask`` is
            ``(B, T, h, w)`` bool, never True in frame 0.
        """
        cfg = self.config
        lo, hi = cfg.mask_rate_min, cfg.mask_rate_max
        rate = lo + (hi - lo) * torch.rand(tokens.shape[0], generator=generator, device=tokens.device)
        mask = torch.rand(tokens.shape, generator=generator, device=tokens.device) < rate[:, None, None, None]
        mask[:, 0] = False  # the first frame is the prompt: always visible
        return tokens.masked_fill(mask, self.mask_id), mask

    def forward(
        self, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """Masked-token cross-entropy on a batch.

        Args:
            batch: ``{"tokens": (B, T, h, w) int64, "actions": (B, T - 1) int64}``.
            generator: optional RNG for the masking.

        Returns:
            ``(loss, logs)``; logs hold ``loss``, ``masked_accuracy`` and ``mask_fraction`` (of frames ``>= 1``).
        """
        tokens, actions = batch["tokens"], batch["actions"]
        inputs, mask = self.mask_tokens(tokens, generator)
        logits = self.logits(inputs, actions).float()
        # Targets are the clean ids; only masked positions count (visible ones would be trivial copies).
        per_token = F.cross_entropy(rearrange(logits, "b t h w v -> (b t h w) v"), tokens.flatten(), reduction="none")
        num_masked = mask.sum().clamp(min=1)
        loss = (per_token * mask.flatten()).sum() / num_masked
        with torch.no_grad():
            correct = (logits.argmax(dim=-1) == tokens) & mask
            logs = {
                "loss": loss.item(),
                "masked_accuracy": (correct.sum() / num_masked).item(),
                "mask_fraction": mask[:, 1:].float().mean().item() if tokens.shape[1] > 1 else 0.0,
            }
        return loss, logs

    # -- cached, frame-by-frame path ------------------------------------------------------------------------------

    def new_cache(self, batch_size: int) -> DynamicsCache:
        """An empty :class:`DynamicsCache` for ``batch_size`` envs (window: ``context_frames``)."""
        return self.transformer.new_cache(batch_size)

    @torch.no_grad()
    def append_frames(self, tokens: Tensor, frame_actions: Tensor, cache: DynamicsCache) -> None:
        """Push finished frames into the cache.

        Args:
            tokens: ``(B, T, h, w)`` int64 final ids (no MASK).
            frame_actions: ``(B, T)`` int64; entry ``t`` is the action that *produced* frame ``t`` (``NO_ACTION``
                for the first frame of an episode).
            cache: updated in place.
        """
        x = self._embed(tokens, frame_actions)
        self.transformer(x, cache=cache, update_cache=True, block_inputs=self._block_inputs(frame_actions))

    @torch.no_grad()
    def next_frame_logits(self, tokens: Tensor, action: Tensor, cache: DynamicsCache) -> Tensor:
        """Logits of one (partially masked) new frame given the cached history; the cache is not modified.

        Args:
            tokens: ``(B, h, w)`` int64 ids of the new frame, MASK where unknown.
            action: ``(B,)`` int64 action leading into the new frame (``NO_ACTION`` if none).
            cache: history of the frames before it.

        Returns:
            ``(B, h, w, codebook_size)`` logits.
        """
        x = self._embed(tokens[:, None], action[:, None])
        return self._head(self.transformer(x, cache=cache, block_inputs=self._block_inputs(action[:, None])))[:, 0]
