"""Wan 2.1 video VAE with GE-Sim's latent normalisation.

GE-Sim encodes frames with diffusers' ``AutoencoderKLWan``: 16 latent channels, 8x spatial and 4x causal
temporal compression. Causality means a single frame encodes to one latent frame and a ``4n + 1`` frame
clip to ``n + 1`` latent frames (frame 0 alone, then groups of 4). GE-Sim encodes each memory frame on its
own (one latent frame each) and the 25 future frames as one clip (7 latent frames).

Latents are normalised per channel as ``(z - latents_mean) / latents_std``; both vectors live in the VAE's
own config so a checkpoint carries its statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan, WanCausalConv3d, WanRMS_norm
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange


class SingleFrameCausalConv3d(WanCausalConv3d):
    """``WanCausalConv3d`` with an exact shortcut for a single frame without cached history.

    A causal convolution pads time with ``k_t - 1`` zero frames in front, so on a lone frame only the kernel's
    last temporal slice ever meets data: the output is a 2-D convolution with that slice. GE-Sim encodes and
    decodes every memory frame and every stepped frame on its own, where the padded 3-D path spent most of its
    time building and convolving zero frames (about 3x the work; measured 0.8 s of a 2.1 s env step at 16 envs).
    Anything else (clips, cached chunks) takes diffusers' path unchanged. Same parameters, same state dict.
    """

    def forward(self, x: torch.Tensor, cache_x: torch.Tensor | None = None) -> torch.Tensor:
        causal_zero_pad = self._padding[4] == self.kernel_size[0] - 1 and self._padding[5] == 0
        plain = self.stride[0] == 1 and self.dilation == (1, 1, 1) and self.groups == 1
        if x.shape[2] != 1 or cache_x is not None or not (causal_zero_pad and plain):
            return super().forward(x, cache_x)
        padding = (self._padding[2], self._padding[0])  # (h, w): F.pad's order is (w, w, h, h, t, 0)
        out = F.conv2d(x[:, :, 0], self.weight[:, :, -1], self.bias, self.stride[1:], padding)
        return out[:, :, None]


class FusedRMSNorm(WanRMS_norm):
    """``WanRMS_norm`` in two passes over a float32 channel-first map instead of five.

    diffusers computes ``F.normalize(x) * scale * gamma + bias``: a division, two multiplications and an addition
    (of ``0.0`` when there is no bias), each a full pass over the feature map. At 64x64 the decoder's last stage
    spent about a quarter of a GE-Sim env step there. Here ``x`` is multiplied once by ``scale * gamma / ||x||``
    (the per-pixel norm is small), and the bias is added in place only if there is one. Equal to diffusers' result
    up to float round-off; other dtypes and layouts, and anything autograd records, take diffusers' path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.float32 or not self.channel_first or torch.is_grad_enabled():
            return super().forward(x)
        inverse_norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12).reciprocal()
        out = x * inverse_norm
        out.mul_(self.gamma * self.scale)
        if isinstance(self.bias, torch.Tensor):
            out.add_(self.bias)
        return out


class NormOutputSiLU(torch.nn.SiLU):
    """SiLU in place when nothing is recorded for autograd.

    In Wan's encoder and decoder every SiLU follows an RMS norm (resnet blocks and output heads), whose output is a
    fresh tensor nothing else reads, so it can be overwritten instead of allocating and writing another feature map.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x, inplace=not torch.is_grad_enabled())


class GeSimVAE(AutoencoderKLWan):
    """``AutoencoderKLWan`` plus frame-level helpers working on normalised latents.

    Adds no parameters, so published Wan 2.1 VAE weights load unchanged
    (``GeSimVAE.from_pretrained(path, subfolder="vae")``). Pixel convention: RGB in [-1, 1],
    ``(B, 3, T, H, W)``. :meth:`encode_frames` and :meth:`decode_latents` switch its modules to inference fast
    paths with the same weights and results (:class:`SingleFrameCausalConv3d`, :class:`FusedRMSNorm`,
    :class:`NormOutputSiLU`), and run a lone frame without diffusers' feature cache.
    """

    def _inference_fast_paths(self) -> None:
        # Not in __init__: diffusers reads the config from AutoencoderKLWan.__init__'s own signature. Once per
        # model: encode_frames and decode_latents run every env step.
        if self.__dict__.get("_fast_paths_ready"):
            return
        for module in self.modules():
            if type(module) is WanCausalConv3d:
                module.__class__ = SingleFrameCausalConv3d
            elif type(module) is WanRMS_norm:
                module.__class__ = FusedRMSNorm
            elif type(module) is torch.nn.SiLU:
                module.__class__ = NormOutputSiLU
        self._fast_paths_ready = True

    def _lone_frame(self, x: torch.Tensor) -> bool:
        """A single frame on the plain path: no feature cache is needed (nothing comes after it)."""
        return x.shape[2] == 1 and self.config.patch_size is None and not self.use_tiling

    @property
    def temporal_factor(self) -> int:
        """Temporal compression (4 for Wan 2.1): one latent frame per 4 frames after the first."""
        return 2 ** sum(bool(d) for d in self.config.temperal_downsample)

    @property
    def spatial_factor(self) -> int:
        """Spatial compression (8 for Wan 2.1)."""
        return 2 ** (len(self.config.dim_mult) - 1)

    def _stats(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.config.latents_mean, device=z.device, dtype=z.dtype)
        std = torch.tensor(self.config.latents_std, device=z.device, dtype=z.dtype)
        return rearrange(mean, "c -> 1 c 1 1 1"), rearrange(std, "c -> 1 c 1 1 1")

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Maps raw latents ``(B, z_dim, T, h, w)`` to unit scale: ``(z - mean) / std``."""
        mean, std = self._stats(z)
        return (z - mean) / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`."""
        mean, std = self._stats(z)
        return z * std + mean

    def encode_frames(
        self,
        x: torch.Tensor,
        *,
        per_frame: bool = False,
        sample: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Encodes frames to normalised latents.

        Args:
            x: Frames in [-1, 1], ``(B, 3, T, H, W)`` with ``H, W`` divisible by :attr:`spatial_factor`.
                Without ``per_frame``, ``T`` must be ``1`` or ``4n + 1``.
            per_frame: Encode every frame as its own single-frame clip, as GE-Sim does for memory frames;
                gives ``T`` latent frames.
            sample: Draw from the posterior (GE-Sim's choice); otherwise take its mean.
            generator: Random generator for the posterior sample.

        Returns:
            Normalised latents ``(B, z_dim, T_lat, H / 8, W / 8)`` with ``T_lat = (T - 1) / 4 + 1``
            (or ``T`` when ``per_frame``).

        Raises:
            ValueError: On a wrong shape or frame count.
        """
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"x must be (B, 3, T, H, W), got {tuple(x.shape)}")
        batch, _, frames, height, width = x.shape
        f_t, f_s = self.temporal_factor, self.spatial_factor
        if height % f_s or width % f_s:
            raise ValueError(f"Frame size {(height, width)} must be divisible by {f_s}")
        if per_frame:
            x = rearrange(x, "b c t h w -> (b t) c 1 h w")
        elif (frames - 1) % f_t:
            raise ValueError(f"Clip length must be 1 or {f_t}n + 1 for the causal VAE, got {frames}")

        self._inference_fast_paths()
        if self._lone_frame(x):
            # diffusers' first chunk without its feature cache: the same computation, minus the cache copies.
            posterior = DiagonalGaussianDistribution(self.quant_conv(self.encoder(x)))
        else:
            posterior = self.encode(x).latent_dist
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        if per_frame:
            z = rearrange(z, "(b t) c 1 h w -> b c t h w", b=batch)
        return self.normalize_latents(z)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Decodes normalised latents to frames.

        Args:
            z: Normalised latents ``(B, z_dim, T_lat, h, w)``, decoded as one causal clip.

        Returns:
            Frames in [-1, 1] (diffusers' Wan decoder clamps, as GE-Sim needs before reusing frames as
            memory), ``(B, 3, 4 * (T_lat - 1) + 1, 8h, 8w)``.
        """
        self._inference_fast_paths()
        z = self.denormalize_latents(z)
        if self._lone_frame(z):  # as in encode_frames
            return self.decoder(self.post_quant_conv(z), first_chunk=True).clamp(-1.0, 1.0)
        return self.decode(z).sample
