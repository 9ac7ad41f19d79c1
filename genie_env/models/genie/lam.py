"""Genie latent action model (LAM) on pixels (paper Sec. 2.1, "Latent Action Model").

The LAM learns, without labels, a small discrete vocabulary of actions that explains how frame ``x_t`` turns into
``x_{t+1}``. The paper feeds it raw pixels rather than tokens (Table 4: better controllability, dtPSNR 1.91 vs 1.33).

Indexing (0-based): a clip has frames ``x_0 .. x_{T-1}`` and ``T - 1`` transitions; ``a_t`` explains
``x_t -> x_{t+1}``.

Encoder: a causal ST-transformer over the patches of every frame plus one learned *action token* per frame. The
action token takes part in the frame's spatial attention (so it summarises the frame) and in causal temporal
attention (so at frame ``t+1`` it has seen ``x_0 .. x_{t+1}``). ``a_t`` is read from the action token of frame
``t+1`` -- the first position that has seen the target frame -- projected to ``action_dim`` and vector-quantised
with a tiny codebook (paper: 8 codes). Reading it at frame ``t`` instead (a bug in some re-implementations) would
give an action that never saw ``x_{t+1}``.

Decoder: a causal ST-transformer over the patches of ``x_0 .. x_{T-2}`` with the embedding of ``a_t`` added to
every patch of frame ``t``; its output at frame ``t`` predicts ``x_{t+1}``. It therefore sees ``x_{<=t}`` and
``a_{<=t}`` but never ``x_{t+1}`` except through the quantised ``a_t`` -- the bottleneck cannot be bypassed.

Loss: MSE of the predicted next frames plus the VQ loss; gradients reach the encoder through the straight-through
estimator. Watch ``action_usage`` / ``action_perplexity`` in the logs: action collapse is the failure reported by
several re-implementations, and we saw it here too (Boxing, tiny preset: one action of 8 after 400 steps, with
dead-code restarts on). Two changes counter it:

* **Residual prediction** (``residual=True``): the decoder predicts ``x_{t+1} - x_t``. An untrained LAM then
  already copies the last frame, so from the first step on all of the loss is about what changed, which only the
  action can tell it; a plain decoder first spends its capacity learning to copy while the action path starves.
* **Spread terms**: a batch-variance hinge (``variance_weight``,
  :meth:`~genie_env.models.genie.quantize.VectorQuantizer.variance_hinge`) pushes the encoder's outputs apart even
  at full collapse, and the batch-entropy objective (``diversity_weight``,
  :meth:`~genie_env.models.genie.quantize.VectorQuantizer.diversity_loss`) then spreads them evenly over the
  actions. Dead-code restarts alone cannot revive actions once the encoder's outputs have collapsed: a restarted
  code is a copy of the one output there is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange, repeat
from torch import Tensor, nn

from genie_env.models.genie.quantize import QuantizerOutput, VectorQuantizer
from genie_env.models.genie.st_transformer import STTransformer, init_weights
from genie_env.models.genie.tokenizer import psnr_from_mse


class LatentActionModel(ModelMixin, ConfigMixin):
    """Pixel-space latent action model with a VQ action bottleneck.

    Args:
        image_height: frame height ``H`` (divisible by ``patch_size``).
        image_width: frame width ``W`` (divisible by ``patch_size``).
        in_channels: image channels ``C``.
        patch_size: square patch side (paper: 16).
        num_actions: latent action codebook size ``|A|`` (paper: 8).
        action_dim: latent action code dimension (paper: 32).
        encoder_dim: encoder width.
        encoder_depth: encoder ST blocks.
        encoder_heads: encoder attention heads.
        encoder_head_dim: encoder per-head width.
        decoder_dim: decoder width.
        decoder_depth: decoder ST blocks.
        decoder_heads: decoder attention heads.
        decoder_head_dim: decoder per-head width.
        mlp_ratio: FFN hidden width as a multiple of the model width.
        qk_norm: RMSNorm on queries/keys.
        context_frames: temporal attention window (frames).
        commitment_weight: VQ commitment loss weight.
        restart_after_steps: dead-action restart patience in training steps (0 disables).
        rope_base: RoPE base for the time axis.
        residual: the decoder predicts the change from the last context frame (else the frame itself).
        diversity_weight: weight of the action-diversity term in the loss (0 disables).
        diversity_temperature: softmax temperature of the diversity term's soft assignments.
        variance_weight: weight of the batch-variance hinge on the latent actions (0 disables).
        motion_weight: extra reconstruction weight on pixels that change between ``x_t`` and ``x_{t+1}`` (0: plain
            MSE). On Atari most of a frame is static and copying the last frame already scores well, so without it
            the bottleneck need not carry the motion the actions should stand for.
        motion_threshold: a pixel "changes" when any channel moves by more than this (frames in [-1, 1]).
        encoder_difference: the encoder also sees each frame's change from the previous one (``x_t - x_{t-1}``,
            zero for the first frame) beside the frame itself. Still pixels and still causal; it hands the action
            token the motion directly instead of leaving the encoder to find a few moved pixels by attention.
        continuous_steps: for this many training steps the decoder gets the encoder's unit-norm latent itself
            instead of its code. Trained through VQ from the start, the decoder can settle where it ignores the
            action (codes that carry nothing yet are noise to it) and then no gradient reaches the encoder; with a
            continuous start both learn a latent that explains the change first, and the dead-code restarts then
            seed the codes from those latents. Inference always quantises.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_height: int = 64,
        image_width: int = 64,
        in_channels: int = 3,
        patch_size: int = 8,
        num_actions: int = 8,
        action_dim: int = 32,
        encoder_dim: int = 128,
        encoder_depth: int = 4,
        encoder_heads: int = 4,
        encoder_head_dim: int = 32,
        decoder_dim: int = 128,
        decoder_depth: int = 4,
        decoder_heads: int = 4,
        decoder_head_dim: int = 32,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        context_frames: int = 16,
        commitment_weight: float = 0.25,
        restart_after_steps: int = 50,
        rope_base: float = 10_000.0,
        residual: bool = True,
        diversity_weight: float = 0.1,
        diversity_temperature: float = 1.0,
        variance_weight: float = 10.0,
        motion_weight: float = 0.0,
        motion_threshold: float = 0.05,
        encoder_difference: bool = False,
        continuous_steps: int = 0,
    ) -> None:
        super().__init__()
        if image_height % patch_size or image_width % patch_size:
            raise ValueError(
                f"frame size must be divisible by the patch: {image_height=} {image_width=} {patch_size=}"
            )
        self.grid_h = image_height // patch_size
        num_patches = self.grid_h * (image_width // patch_size)
        patch_dim = in_channels * patch_size * patch_size

        self.encoder_in = nn.Linear(patch_dim * (2 if encoder_difference else 1), encoder_dim)
        self.action_token = nn.Parameter(torch.zeros(encoder_dim))
        # Slot 0 is the action token, slots 1.. the patches.
        self.encoder_pos = nn.Parameter(torch.zeros(num_patches + 1, encoder_dim))
        self.encoder = STTransformer(
            encoder_dim, encoder_depth, encoder_heads, encoder_head_dim, mlp_ratio, qk_norm, context_frames, rope_base
        )
        self.to_action = nn.Linear(encoder_dim, action_dim)
        self.quantizer = VectorQuantizer(num_actions, action_dim, commitment_weight, restart_after_steps)

        self.decoder_in = nn.Linear(patch_dim, decoder_dim)
        self.decoder_pos = nn.Parameter(torch.zeros(num_patches, decoder_dim))
        self.action_in = nn.Linear(action_dim, decoder_dim)
        self.decoder = STTransformer(
            decoder_dim, decoder_depth, decoder_heads, decoder_head_dim, mlp_ratio, qk_norm, context_frames, rope_base
        )
        self.decoder_out = nn.Linear(decoder_dim, patch_dim)

        if continuous_steps > 0:  # counts training steps, saved with the weights so a resumed run keeps its phase
            self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

        self.apply(init_weights)
        for param in (self.action_token, self.encoder_pos, self.decoder_pos):
            nn.init.trunc_normal_(param, std=0.02)
        if residual:  # start as an exact copy of the last frame
            nn.init.zeros_(self.decoder_out.weight)

    def _check_frames(self, frames: Tensor, min_frames: int) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_height, cfg.image_width)
        if frames.ndim != 5 or tuple(frames.shape[2:]) != expected or frames.shape[1] < min_frames:
            raise ValueError(
                f"frames must be (B, T>={min_frames}, {', '.join(map(str, expected))}), got {tuple(frames.shape)}"
            )

    def _patchify(self, frames: Tensor) -> Tensor:
        p = self.config.patch_size
        return rearrange(frames, "b t c (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=p, p2=p)

    def _unpatchify(self, patches: Tensor) -> Tensor:
        p = self.config.patch_size
        return rearrange(patches, "b t (h w) (p1 p2 c) -> b t c (h p1) (w p2)", h=self.grid_h, p1=p, p2=p)

    def encode_latents(self, frames: Tensor) -> Tensor:
        """Continuous (pre-quantisation) latent actions.

        Args:
            frames: ``(B, T, C, H, W)`` in ``[-1, 1]``, ``T >= 2``.

        Returns:
            ``(B, T - 1, action_dim)``; entry ``t`` is read at frame ``t + 1`` and explains ``x_t -> x_{t+1}``.
        """
        self._check_frames(frames, min_frames=2)
        b, t = frames.shape[:2]
        pixels = self._patchify(frames)
        if self.config.encoder_difference:
            change = torch.cat([torch.zeros_like(pixels[:, :1]), pixels[:, 1:] - pixels[:, :-1]], dim=1)
            pixels = torch.cat([pixels, change], dim=-1)
        patches = self.encoder_in(pixels)
        tokens = repeat(self.action_token, "d -> b t 1 d", b=b, t=t)
        x = torch.cat([tokens, patches], dim=2) + self.encoder_pos
        out = self.encoder(x)
        # Action token of frames 1..T-1: frame t+1 is the first to have seen x_{t+1}.
        return self.to_action(out[:, 1:, 0])

    @torch.no_grad()
    def infer_actions(self, frames: Tensor) -> Tensor:
        """Latent action ids ``(B, T - 1)`` int64 in ``[0, num_actions)`` for frames ``(B, T, C, H, W)``."""
        return self.quantizer.nearest(self.encode_latents(frames))

    def decode(self, context_frames: Tensor, actions: Tensor) -> Tensor:
        """Predict each next frame from the history and the latent action.

        Args:
            context_frames: ``(B, T, C, H, W)`` frames ``x_0 .. x_{T-1}`` in ``[-1, 1]``.
            actions: ``(B, T)`` int64 action ids, or ``(B, T, action_dim)`` code vectors (training, through the
                STE); ``actions[:, t]`` is ``a_t``.

        Returns:
            ``(B, T, C, H, W)`` unclamped predictions; entry ``t`` predicts ``x_{t+1}`` from ``x_{<=t}``, ``a_{<=t}``.
        """
        self._check_frames(context_frames, min_frames=1)
        codes = self.quantizer.lookup(actions) if not actions.is_floating_point() else actions
        if codes.shape[:2] != context_frames.shape[:2]:
            raise ValueError(f"need one action per context frame: {tuple(codes.shape)} vs {context_frames.shape}")
        x = self.decoder_in(self._patchify(context_frames)) + self.decoder_pos
        x = x + rearrange(self.action_in(codes), "b t d -> b t 1 d")  # additive conditioning, as in the paper
        out = self._unpatchify(self.decoder_out(self.decoder(x)))
        return context_frames + out if self.config.residual else out

    def reconstruct(self, frames: Tensor) -> tuple[Tensor, QuantizerOutput]:
        """Infer the actions of a clip and predict its frames ``1 .. T-1`` through them.

        Args:
            frames: ``(B, T, C, H, W)`` in ``[-1, 1]``, ``T >= 2``.

        Returns:
            ``(pred, vq)``: ``pred`` ``(B, T - 1, C, H, W)`` where entry ``t`` predicts ``x_{t+1}`` from ``x_{<=t}``
            and the quantised ``a_{<=t}``; ``vq`` is the quantiser output for the ``T - 1`` actions.
        """
        vq = self.quantizer(self.encode_latents(frames))
        # The decoder gets x_0 .. x_{T-2}: the target frame x_{t+1} only reaches it through a_t.
        return self.decode(frames[:, :-1], vq.quantized), vq

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Next-frame reconstruction through the action bottleneck.

        Args:
            batch: ``{"frames": (B, T, C, H, W) float in [-1, 1]}`` with ``T >= 2``.

        Returns:
            ``(loss, logs)``; logs hold ``loss``, ``recon_mse``, ``psnr``, ``action_gain_psnr`` (PSNR with the inferred
            actions minus PSNR with another clip's), ``vq_loss``, ``action_usage`` (fraction
            of the ``num_actions`` codes used in the batch) and ``action_perplexity``.
        """
        cfg = self.config
        frames = batch["frames"]
        latents = self.encode_latents(frames)
        vq = self.quantizer(latents)
        codes = vq.quantized
        if cfg.continuous_steps > 0 and self.training:
            if int(self.train_steps) < cfg.continuous_steps:
                codes = F.normalize(latents, dim=-1)
            self.train_steps += 1
        pred = self.decode(frames[:, :-1], codes)  # as in reconstruct(), keeping the latents
        target = frames[:, 1:]
        recon_mse = F.mse_loss(pred, target)
        recon = recon_mse
        if cfg.motion_weight > 0:
            # Weight 1 + motion_weight where a pixel changes; normalised so the loss stays an MSE-sized mean.
            moved = (target - frames[:, :-1]).abs().amax(dim=2, keepdim=True) > cfg.motion_threshold
            weight = (1.0 + cfg.motion_weight * moved.float()).expand_as(pred)
            recon = (weight * (pred - target).pow(2)).sum() / weight.sum()
        diversity = self.quantizer.diversity_loss(latents, cfg.diversity_temperature)
        spread = self.quantizer.variance_hinge(latents)
        loss = recon + vq.loss + cfg.diversity_weight * diversity + cfg.variance_weight * spread
        with torch.no_grad():
            psnr = psnr_from_mse(F.mse_loss(pred.clamp(-1.0, 1.0), target))
            # What the inferred actions are worth: the same decoder given another clip's actions (a roll of the
            # batch). Near 0 dB means the decoder ignores the bottleneck, whatever the usage says.
            others = self.decode(frames[:, :-1], codes.roll(1, dims=0)) if frames.shape[0] > 1 else pred
            gain = psnr - psnr_from_mse(F.mse_loss(others.clamp(-1.0, 1.0), target))
        logs = {
            "loss": loss.item(),
            "recon_mse": recon_mse.item(),
            "psnr": psnr.item(),
            "action_gain_psnr": gain.item(),
            "vq_loss": vq.loss.item(),
            "diversity": diversity.item(),
            "variance_hinge": spread.item(),
            "action_usage": vq.usage.item(),
            "action_perplexity": vq.perplexity.item(),
        }
        return loss, logs
