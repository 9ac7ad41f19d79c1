"""Cosine-similarity vector quantiser with a straight-through estimator and dead-code restarts.

Used twice in Genie: the video tokenizer's codebook (paper: 1024 codes x 32 dims) and the latent-action bottleneck
(paper: 8 codes x 32 dims).

Why each piece is there:

* **L2-normalised (cosine) codes and inputs.** Matching directions instead of raw vectors keeps code and encoder
  scales from drifting apart, a main cause of codebook collapse (ViT-VQGAN, Yu et al. 2022; Jafar does the same).
* **Straight-through estimator (STE).** ``z + (q - z).detach()`` outputs the code vector ``q`` in the forward pass
  but passes the decoder's gradient to the encoder unchanged; without it the encoder gets no reconstruction signal.
* **Codebook + commitment losses.** ``||sg(z) - q||^2`` pulls codes towards encoder outputs and
  ``beta * ||z - sg(q)||^2`` keeps the encoder near its code (VQ-VAE, van den Oord et al. 2017; ``beta = 0.25``).
* **Dead-code restarts.** A code unused for ``restart_after_steps`` consecutive training steps is re-initialised
  from a randomly chosen encoder output of the current batch, so it lands where the data is. Restarts happen at
  the *start* of a forward pass, before the codebook enters the autograd graph, so no tensor saved for backward is
  ever modified in place. They use the global torch RNG.
* **Diversity term (optional).** :meth:`VectorQuantizer.diversity_loss` is the entropy objective of LFQ
  (MAGVIT-v2, Yu et al. 2023) on soft cosine assignments: confident per-sample assignments, a uniform batch
  average. Restarts cannot revive a codebook whose *encoder* has collapsed (every output identical: a restarted
  code just copies it); this term pushes the encoder's outputs apart. The latent action model uses it.
* **Data-parallel safety.** When ``torch.distributed`` is initialised, training-mode usage counts are summed over
  ranks (one all-reduce of ``K`` integers) so every rank agrees on which codes are dead, and the replacement vectors
  are broadcast from rank 0, so the codebook stays identical on every rank. Every rank must therefore call the
  quantiser the same number of times per step (true for DDP/FSDP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@dataclass
class QuantizerOutput:
    """Result of :meth:`VectorQuantizer.forward`.

    Attributes:
        quantized: ``(..., dim)`` unit-norm code vectors; gradients flow to the input through the STE.
        ids: ``(...)`` int64 code indices.
        loss: scalar codebook loss + ``commitment_weight`` * commitment loss.
        usage: scalar fraction of codes used at least once in this batch (all ranks' batches when distributed).
        perplexity: scalar ``exp(entropy)`` of the batch's code histogram (1 = collapse, ``codebook_size`` = uniform).
    """

    quantized: Tensor
    ids: Tensor
    loss: Tensor
    usage: Tensor
    perplexity: Tensor


class VectorQuantizer(nn.Module):
    """Cosine VQ layer.

    Args:
        codebook_size: number of codes ``K``.
        dim: code dimension.
        commitment_weight: ``beta`` of the commitment loss.
        restart_after_steps: restart a code after this many consecutive training steps without use; 0 disables.
    """

    def __init__(
        self, codebook_size: int, dim: int, commitment_weight: float = 0.25, restart_after_steps: int = 100
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.dim = dim
        self.commitment_weight = commitment_weight
        self.restart_after_steps = restart_after_steps
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim))
        # Persistent so that a resumed run keeps counting instead of restarting every code at once.
        self.register_buffer("steps_unused", torch.zeros(codebook_size, dtype=torch.long))

    def codes(self) -> Tensor:
        """Unit-norm codebook ``(K, dim)``."""
        return F.normalize(self.codebook, dim=-1)

    def lookup(self, ids: Tensor) -> Tensor:
        """Code vectors ``(..., dim)`` for integer ``ids`` ``(...)``."""
        return F.embedding(ids, self.codes())

    @torch.no_grad()
    def nearest(self, z: Tensor) -> Tensor:
        """Index ``(...)`` of the code with the highest cosine similarity to each ``z`` ``(..., dim)``."""
        flat = F.normalize(z.reshape(-1, self.dim), dim=-1)
        return (flat @ self.codes().t()).argmax(dim=-1).reshape(z.shape[:-1])

    def diversity_loss(self, z: Tensor, temperature: float = 0.1) -> Tensor:
        """``E_b[H(p_b)] - H(E_b[p_b])`` in nats, ``p_b = softmax(cos(z_b, codes) / temperature)``.

        Minimising it makes each assignment confident and the batch's average assignment uniform; it is
        ``>= -log(K)``, reached when the batch uses every code equally and each sample picks one code.

        Args:
            z: ``(..., dim)`` encoder outputs (before quantisation).
            temperature: softmax temperature of the cosine similarities (in ``[-1, 1]``).
        """
        flat = F.normalize(z.reshape(-1, self.dim).float(), dim=-1)
        probs = torch.softmax(flat @ self.codes().float().t() / temperature, dim=-1)
        per_sample = -(probs * probs.clamp(min=1e-12).log()).sum(dim=-1).mean()
        mean = probs.mean(dim=0)
        batch = -(mean * mean.clamp(min=1e-12).log()).sum()
        return per_sample - batch

    def variance_hinge(self, z: Tensor, target: float | None = None) -> Tensor:
        """``mean_d relu(target - Var_b[normalize(z)_d])``: penalises a batch of encoder outputs that bunch up.

        Unlike :meth:`diversity_loss`, whose gradient is exactly zero at full collapse (all samples identical is a
        stationary point of the entropy objective), this pushes apart any two outputs that differ at all, and
        Adam's per-parameter scaling turns even tiny differences into full-size steps (TinyWorlds' fix for LAM
        collapse).

        Args:
            z: ``(..., dim)`` encoder outputs (before quantisation).
            target: per-dimension variance to reach; default ``0.5 / dim``, half that of directions spread
                uniformly over the sphere.
        """
        flat = F.normalize(z.reshape(-1, self.dim).float(), dim=-1)
        target = 0.5 / self.dim if target is None else target
        return F.relu(target - flat.var(dim=0, unbiased=False)).mean()

    @torch.no_grad()
    def _restart_dead_codes(self, candidates: Tensor) -> None:
        """Re-initialise codes unused for too long from rows of ``candidates`` ``(N, dim)`` (unit norm)."""
        dead = self.steps_unused >= self.restart_after_steps
        num_dead = int(dead.sum())
        if num_dead == 0:
            return
        picks = torch.randint(0, candidates.shape[0], (num_dead,), device=candidates.device)
        # Tiny noise so that two restarts drawn from the same row do not tie forever.
        fresh = candidates[picks] + 1e-3 * torch.randn_like(candidates[picks])
        if _distributed():
            dist.broadcast(fresh, src=0)  # every rank agrees on `dead` (global counts), so shapes match
        self.codebook.data[dead] = fresh.to(self.codebook.dtype)
        self.steps_unused[dead] = 0

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantise ``z`` ``(..., dim)``; in training mode also track usage and restart dead codes."""
        flat = F.normalize(z.reshape(-1, self.dim), dim=-1)
        if self.training and self.restart_after_steps > 0:
            self._restart_dead_codes(flat.detach())
        codes = self.codes()
        with torch.no_grad():
            ids = (flat @ codes.t()).argmax(dim=-1)
        q = codes[ids]
        codebook_loss = F.mse_loss(q, flat.detach())
        commitment_loss = F.mse_loss(flat, q.detach())
        quantized = flat + (q - flat).detach()  # straight-through estimator

        with torch.no_grad():
            counts = torch.bincount(ids, minlength=self.codebook_size)
            if self.training and _distributed():
                dist.all_reduce(counts)  # global usage: identical dead-code bookkeeping on every rank
            if self.training:
                self.steps_unused.add_(1).masked_fill_(counts > 0, 0)
            probs = counts.float() / counts.sum().clamp(min=1)
            entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
        return QuantizerOutput(
            quantized=quantized.reshape(z.shape),
            ids=ids.reshape(z.shape[:-1]),
            loss=codebook_loss + self.commitment_weight * commitment_loss,
            usage=(counts > 0).float().mean(),
            perplexity=entropy.exp(),
        )
