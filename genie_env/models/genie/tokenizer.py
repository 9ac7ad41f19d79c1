"""Genie video tokenizer: an ST-ViViT VQ-VAE (paper Sec. 2.1, "Video Tokenizer").

Pipeline for frames ``(B, T, 3, H, W)`` in ``[-1, 1]``::

    patchify (p x p) -> linear -> + spatial pos-emb -> causal ST encoder -> linear -> cosine VQ (K x latent_dim)
    -> linear -> + spatial pos-emb -> causal ST decoder -> linear -> unpatchify

Each frame becomes an ``(H/p, W/p)`` grid of token ids. Both stacks are temporally causal, so the tokens of frame
``t`` depend only on frames ``<= t`` and the reconstruction of frame ``t`` only on tokens ``<= t``; that is what lets
the dynamics model generate tokens one frame at a time and the decoder render them one frame at a time
(:meth:`VideoTokenizer.decode_step` with a :class:`~genie_env.models.genie.st_transformer.KVCache`).

The paper found the ST tokenizer better than a per-frame ViT or C-ViViT (Table 3) and scaling the decoder more
useful than the encoder (paper preset: encoder 12 x d512, decoder 20 x d1024). Training loss is reconstruction MSE
plus the VQ codebook/commitment loss; there is no GAN or perceptual term, so expect some blur.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from einops import rearrange
from torch import Tensor, nn

from genie_env.models.genie.quantize import VectorQuantizer
from genie_env.models.genie.st_transformer import KVCache, STTransformer, init_weights


def psnr_from_mse(mse: Tensor) -> Tensor:
    """PSNR in dB for images in ``[-1, 1]`` (peak-to-peak 2, so ``MAX^2 = 4``)."""
    return 10.0 * torch.log10(4.0 / mse.clamp(min=1e-10))


class VideoTokenizer(ModelMixin, ConfigMixin):
    """ST-ViViT VQ-VAE video tokenizer.

    Args:
        image_height: frame height ``H`` (divisible by ``patch_size``).
        image_width: frame width ``W`` (divisible by ``patch_size``).
        in_channels: image channels ``C``.
        patch_size: square patch side ``p``; the token grid is ``(H/p, W/p)``.
        codebook_size: number of codes ``K``; token ids are in ``[0, K)``.
        latent_dim: code dimension.
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
        context_frames: temporal attention window (frames, including the current one).
        commitment_weight: VQ commitment loss weight ``beta``.
        restart_after_steps: dead-code restart patience in training steps (0 disables).
        rope_base: RoPE base for the time axis.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        image_height: int = 64,
        image_width: int = 64,
        in_channels: int = 3,
        patch_size: int = 4,
        codebook_size: int = 1024,
        latent_dim: int = 32,
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
        restart_after_steps: int = 100,
        rope_base: float = 10_000.0,
    ) -> None:
        super().__init__()
        if image_height % patch_size or image_width % patch_size:
            raise ValueError(
                f"frame size must be divisible by the patch: {image_height=} {image_width=} {patch_size=}"
            )
        self.grid_h = image_height // patch_size
        self.grid_w = image_width // patch_size
        num_patches = self.grid_h * self.grid_w
        patch_dim = in_channels * patch_size * patch_size

        self.encoder_in = nn.Linear(patch_dim, encoder_dim)
        self.encoder_pos = nn.Parameter(torch.zeros(num_patches, encoder_dim))
        self.encoder = STTransformer(
            encoder_dim, encoder_depth, encoder_heads, encoder_head_dim, mlp_ratio, qk_norm, context_frames, rope_base
        )
        self.to_latent = nn.Linear(encoder_dim, latent_dim)
        self.quantizer = VectorQuantizer(codebook_size, latent_dim, commitment_weight, restart_after_steps)
        self.decoder_in = nn.Linear(latent_dim, decoder_dim)
        self.decoder_pos = nn.Parameter(torch.zeros(num_patches, decoder_dim))
        self.decoder = STTransformer(
            decoder_dim, decoder_depth, decoder_heads, decoder_head_dim, mlp_ratio, qk_norm, context_frames, rope_base
        )
        self.decoder_out = nn.Linear(decoder_dim, patch_dim)

        self.apply(init_weights)
        nn.init.trunc_normal_(self.encoder_pos, std=0.02)
        nn.init.trunc_normal_(self.decoder_pos, std=0.02)

    # -- shapes ---------------------------------------------------------------------------------------------------

    def _check_frames(self, frames: Tensor) -> None:
        cfg = self.config
        expected = (cfg.in_channels, cfg.image_height, cfg.image_width)
        if frames.ndim != 5 or tuple(frames.shape[2:]) != expected:
            raise ValueError(f"frames must be (B, T, {', '.join(map(str, expected))}), got {tuple(frames.shape)}")

    def patchify(self, frames: Tensor) -> Tensor:
        """``(B, T, C, H, W)`` frames -> ``(B, T, S, p*p*C)`` patches in row-major grid order."""
        p = self.config.patch_size
        return rearrange(frames, "b t c (h p1) (w p2) -> b t (h w) (p1 p2 c)", p1=p, p2=p)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """Inverse of :meth:`patchify`: ``(B, T, S, p*p*C)`` -> ``(B, T, C, H, W)``."""
        p = self.config.patch_size
        return rearrange(patches, "b t (h w) (p1 p2 c) -> b t c (h p1) (w p2)", h=self.grid_h, p1=p, p2=p)

    # -- encoder --------------------------------------------------------------------------------------------------

    def encode_latents(self, frames: Tensor) -> Tensor:
        """Continuous, pre-quantisation encoder output.

        Args:
            frames: ``(B, T, C, H, W)`` in ``[-1, 1]``.

        Returns:
            ``(B, T, h, w, latent_dim)`` where ``(h, w)`` is the token grid.
        """
        self._check_frames(frames)
        x = self.encoder_in(self.patchify(frames)) + self.encoder_pos
        z = self.to_latent(self.encoder(x))
        return rearrange(z, "b t (h w) e -> b t h w e", h=self.grid_h)

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """Token ids ``(B, T, h, w)`` int64 in ``[0, codebook_size)`` for frames ``(B, T, C, H, W)`` in ``[-1, 1]``."""
        return self.quantizer.nearest(self.encode_latents(frames))

    # -- decoder --------------------------------------------------------------------------------------------------

    def _decode_codes(self, codes: Tensor, cache: KVCache | None = None) -> Tensor:
        """Unit-norm code vectors ``(B, T, S, latent_dim)`` -> unclamped frames ``(B, T, C, H, W)``."""
        x = self.decoder_in(codes) + self.decoder_pos
        x = self.decoder(x, cache=cache, update_cache=cache is not None)
        return self.unpatchify(self.decoder_out(x))

    def _check_ids(self, ids: Tensor) -> None:
        if ids.ndim != 4 or tuple(ids.shape[2:]) != (self.grid_h, self.grid_w):
            raise ValueError(f"ids must be (B, T, {self.grid_h}, {self.grid_w}), got {tuple(ids.shape)}")

    @torch.no_grad()
    def decode(self, ids: Tensor) -> Tensor:
        """Render token ids ``(B, T, h, w)`` int64 as frames ``(B, T, C, H, W)`` clamped to ``[-1, 1]``."""
        self._check_ids(ids)
        codes = self.quantizer.lookup(rearrange(ids, "b t h w -> b t (h w)"))
        return self._decode_codes(codes).clamp(-1.0, 1.0)

    def new_decode_cache(self, batch_size: int) -> KVCache:
        """Empty decoder cache for :meth:`decode_step` (window: ``context_frames``)."""
        return self.decoder.new_cache(batch_size)

    @torch.no_grad()
    def decode_step(self, ids: Tensor, cache: KVCache) -> Tensor:
        """Render ``T`` new frames given the cached decoder state of the frames before them.

        Equivalent to :meth:`decode` on the whole history (within the window) but costs only the new frames. The
        new frames' keys/values are appended to ``cache``.

        Args:
            ids: ``(B, T, h, w)`` int64 token ids of the new frames (usually ``T = 1``).
            cache: from :meth:`new_decode_cache`; call :meth:`KVCache.reset` for streams that start a new episode.

        Returns:
            ``(B, T, C, H, W)`` frames clamped to ``[-1, 1]``.
        """
        self._check_ids(ids)
        codes = self.quantizer.lookup(rearrange(ids, "b t h w -> b t (h w)"))
        return self._decode_codes(codes, cache=cache).clamp(-1.0, 1.0)

    # -- training -------------------------------------------------------------------------------------------------

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction + VQ loss on a batch.

        Args:
            batch: ``{"frames": (B, T, C, H, W) float in [-1, 1]}``.

        Returns:
            ``(loss, logs)``; logs hold ``loss``, ``recon_mse``, ``psnr`` (dB, on the clamped reconstruction),
            ``vq_loss``, ``codebook_usage`` (fraction of codes used in the batch) and ``perplexity``.
        """
        frames = batch["frames"]
        z = self.encode_latents(frames)
        vq = self.quantizer(z)
        recon = self._decode_codes(rearrange(vq.quantized, "b t h w e -> b t (h w) e"))
        recon_mse = F.mse_loss(recon, frames)
        loss = recon_mse + vq.loss
        with torch.no_grad():
            psnr = psnr_from_mse(F.mse_loss(recon.clamp(-1.0, 1.0), frames))
        logs = {
            "loss": loss.item(),
            "recon_mse": recon_mse.item(),
            "psnr": psnr.item(),
            "vq_loss": vq.loss.item(),
            "codebook_usage": vq.usage.item(),
            "perplexity": vq.perplexity.item(),
        }
        return loss, logs
