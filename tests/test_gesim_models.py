"""Fast CPU tests for the GE-Sim networks: DiT, cross-view attention, flow matching, sampler, VAE, presets."""

from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention
from diffusers.models.transformers.transformer_cosmos import CosmosAttnProcessor2_0, CosmosRotaryPosEmbed

from genie_env.models.gesim import (
    INPUT_CHANNELS,
    MEMORY_TIMESTEP,
    CrossViewAttnProcessor,
    FlowSampler,
    MultiViewDiT,
    add_noise,
    assemble_inputs,
    build_dit,
    build_vae,
    count_parameters,
    flow_matching_loss,
    flow_matching_step,
    frame_timesteps,
    karras_flow_times,
    noise_memory,
)
from genie_env.models.gesim.flow import from_flow_target, newest_memory, to_flow_target

B, V, T, H, W = 1, 3, 5, 8, 8  # 3 views x (4 memory + 1 future) latent frames of 8x8


def _inputs(seed: int = 0, batch: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "latents": torch.randn(batch, V, 16, T, H, W, generator=g),
        "traj": torch.rand(batch, V, 3, T, H, W, generator=g) * 2 - 1,
        "ray": torch.randn(batch, V, 6, T, H, W, generator=g),
        "cond_mask": torch.tensor([[1, 1, 1, 1, 0]] * batch),
    }


def _forward(model: MultiViewDiT, inputs: dict[str, torch.Tensor], **kwargs: torch.Tensor) -> torch.Tensor:
    x = assemble_inputs(**inputs)
    t = frame_timesteps(torch.full((x.shape[0],), 0.7), inputs["cond_mask"])
    with torch.no_grad():
        return model(x, t, **kwargs).sample


@pytest.fixture(scope="module")
def tiny() -> MultiViewDiT:
    torch.manual_seed(0)
    return build_dit("tiny").eval()


# --- network -----------------------------------------------------------------------------------------


def test_assemble_inputs_channel_order() -> None:
    """27 channels: latents, trajectory, rays (origin, direction), condition mask, zero padding mask."""
    inputs = _inputs()
    x = assemble_inputs(**inputs)
    assert x.shape == (B, V, INPUT_CHANNELS, T, H, W) and INPUT_CHANNELS == 27
    assert torch.equal(x[:, :, 0:16], inputs["latents"])
    assert torch.equal(x[:, :, 16:19], inputs["traj"])
    assert torch.equal(x[:, :, 19:25], inputs["ray"])
    cond = x[:, :, 25]  # (B, V, T, H, W): 1 on the 4 memory frames of every view, 0 on the future frame
    assert torch.equal(cond[:, :, :4], torch.ones_like(cond[:, :, :4]))
    assert torch.equal(cond[:, :, 4], torch.zeros_like(cond[:, :, 4]))
    assert torch.equal(x[:, :, 26], torch.zeros_like(x[:, :, 26]))
    with pytest.raises(ValueError, match="ray"):
        assemble_inputs(inputs["latents"], inputs["traj"], inputs["ray"][:, :, :3], inputs["cond_mask"])


def test_forward_shape_and_timestep_broadcast(tiny: MultiViewDiT) -> None:
    """Velocity for 16 channels of every frame; a (B,) timestep equals the same value on all (B, T) frames."""
    x = assemble_inputs(**_inputs())
    with torch.no_grad():
        per_frame = tiny(x, torch.full((B, T), 0.3)).sample
        shared = tiny(x, torch.full((B,), 0.3)).sample
        other = tiny(x, torch.tensor([[0.3, 0.3, 0.3, 0.3, 0.9]])).sample
    assert per_frame.shape == (B, V, 16, T, H, W)
    # Same math, but the two timestep layouts may reduce in a different order on 2 threads (seen: 2e-5 apart).
    torch.testing.assert_close(per_frame, shared, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(per_frame, other, atol=1e-3)
    with pytest.raises(ValueError, match="timestep"):
        tiny(x, torch.zeros(B, T + 1))


def test_save_load_roundtrip(tiny: MultiViewDiT, tmp_path) -> None:
    """save_pretrained / from_pretrained restores config, cross-view processors and identical outputs."""
    tiny.save_pretrained(tmp_path)
    loaded = MultiViewDiT.from_pretrained(tmp_path).eval()
    public = lambda cfg: {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k[0] != "_"}  # noqa: E731
    assert public(loaded.config) == public(tiny.config)  # JSON turns tuples into lists
    assert isinstance(loaded.transformer_blocks[3].attn1.processor, CrossViewAttnProcessor)
    assert isinstance(loaded.transformer_blocks[1].attn1.processor, CosmosAttnProcessor2_0)
    inputs = _inputs()
    task = torch.tensor([2])
    assert torch.equal(_forward(tiny, inputs, task_ids=task), _forward(loaded, inputs, task_ids=task))


def test_view_embedding(tiny: MultiViewDiT) -> None:
    """Identical views get different outputs through their view ids; permuting the ids permutes the outputs."""
    inputs = _inputs()
    inputs = {k: v[:, :1].expand(B, V, *v.shape[2:]) if v.ndim == 6 else v for k, v in inputs.items()}
    out = _forward(tiny, inputs, view_ids=torch.tensor([[0, 1, 2]]))
    swapped = _forward(tiny, inputs, view_ids=torch.tensor([[1, 0, 2]]))
    assert not torch.allclose(out[:, 0], out[:, 1], atol=1e-4)
    torch.testing.assert_close(swapped[:, 0], out[:, 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(swapped[:, 1], out[:, 0], atol=1e-5, rtol=1e-5)


def test_task_conditioning(tiny: MultiViewDiT) -> None:
    """Task ids change the output; no task id means the learned null-task entry."""
    inputs = _inputs()
    null = _forward(tiny, inputs)
    torch.testing.assert_close(null, _forward(tiny, inputs, task_ids=torch.tensor([tiny.null_task_id])))
    assert not torch.allclose(null, _forward(tiny, inputs, task_ids=torch.tensor([0])))


@pytest.mark.parametrize(("every", "coupled"), [(0, False), (3, True), (1, True)])
def test_cross_view_attention(every: int, coupled: bool) -> None:
    """Views only influence each other through the joint-attention blocks."""
    torch.manual_seed(0)
    model = build_dit("tiny", cross_view_every=every).eval()
    assert model.cross_view_block_ids == ([] if every == 0 else list(range(0, 4, every)))
    inputs = _inputs()
    perturbed = dict(inputs, latents=inputs["latents"].clone())
    perturbed["latents"][:, 0] += 1.0  # change view 0 only
    out, out_p = _forward(model, inputs), _forward(model, perturbed)
    assert not torch.allclose(out[:, 0], out_p[:, 0])
    assert torch.allclose(out[:, 1:], out_p[:, 1:], atol=1e-6) != coupled


def test_cross_view_processor_matches_cosmos_for_one_view() -> None:
    """With one view the processor is exactly diffusers' Cosmos self-attention (RoPE, QK norm included)."""
    torch.manual_seed(0)
    attn = Attention(query_dim=64, heads=2, dim_head=32, qk_norm="rms_norm", out_bias=False)
    rope = CosmosRotaryPosEmbed(hidden_size=32, rope_scale=(1.0, 3.0, 3.0))(torch.zeros(1, 1, 2, 4, 4), fps=16)
    tokens = torch.randn(6, 8, 64)  # 2 samples x 3 views, 2 x (4/2) x (4/2) tokens
    with torch.no_grad():
        attn.set_processor(CosmosAttnProcessor2_0())
        reference = attn(tokens, image_rotary_emb=rope)
        attn.set_processor(CrossViewAttnProcessor(num_views=1))
        torch.testing.assert_close(attn(tokens, image_rotary_emb=rope), reference)
        # Joint over 3 views: identical to one sample holding all 3 views' tokens concatenated.
        attn.set_processor(CrossViewAttnProcessor(num_views=3))
        joint = attn(tokens, image_rotary_emb=rope)
        rope_cat = tuple(x.repeat(3, 1) for x in rope)
        attn.set_processor(CosmosAttnProcessor2_0())
        flat = attn(tokens.reshape(2, 24, 64), image_rotary_emb=rope_cat)
    torch.testing.assert_close(joint, flat.reshape(6, 8, 64))


# --- flow matching -------------------------------------------------------------------------------------


def test_flow_helpers() -> None:
    """Interpolation end points, per-frame timesteps, memory-only noise augmentation."""
    inputs = _inputs()
    x0, cond = inputs["latents"], inputs["cond_mask"]
    eps = torch.randn_like(x0)
    torch.testing.assert_close(add_noise(x0, eps, torch.zeros(B)), x0)
    torch.testing.assert_close(add_noise(x0, eps, torch.ones(B)), eps)
    t = frame_timesteps(torch.tensor([0.6]), cond)
    torch.testing.assert_close(t, torch.tensor([[MEMORY_TIMESTEP] * 4 + [0.6]]))
    assert abs(MEMORY_TIMESTEP - 1e-4 / (1 + 1e-4)) < 1e-12
    noised = noise_memory(x0, cond, max_strength=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(noised[:, :, :, 4], x0[:, :, :, 4])
    delta = (noised[:, :, :, :4] - x0[:, :, :, :4]).abs()
    assert 0 < delta.max() < 0.1 * (x0.abs().max() + 6)


def test_loss_ignores_memory_frames() -> None:
    """The loss and its gradient do not depend on the prediction at memory frames."""
    inputs = _inputs()
    x0, cond = inputs["latents"], inputs["cond_mask"]
    eps = torch.randn_like(x0)
    pred = torch.randn_like(x0, requires_grad=True)
    loss = flow_matching_loss(pred, x0, eps, cond)
    loss.backward()
    assert torch.count_nonzero(pred.grad[:, :, :, :4]) == 0
    assert torch.count_nonzero(pred.grad[:, :, :, 4]) > 0

    garbage = pred.detach().clone()
    garbage[:, :, :, :4] = 1e3
    torch.testing.assert_close(flow_matching_loss(garbage, x0, eps, cond), loss.detach())
    perfect = (eps - x0).clone()
    perfect[:, :, :, :4] = 1e3
    assert flow_matching_loss(perfect, x0, eps, cond).item() == 0.0


def test_flow_matching_step_trains() -> None:
    """The training step is seeded-deterministic and back-propagates into the network."""
    model = build_dit("tiny")
    inputs = _inputs(batch=2)
    kwargs = dict(task_ids=torch.tensor([0, 3]), task_dropout=0.5)
    loss_a, logs = flow_matching_step(model, **inputs, generator=torch.Generator().manual_seed(1), **kwargs)
    loss_b, _ = flow_matching_step(model, **inputs, generator=torch.Generator().manual_seed(1), **kwargs)
    assert torch.isfinite(loss_a) and loss_a.item() == loss_b.item() == logs["train/loss"]
    loss_a.backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    assert model.view_embed.weight.grad.abs().sum() > 0


def test_karras_schedule_matches_gesim() -> None:
    """15 Karras levels 80 -> 0.002 (rho 7), as in GE-Sim's released sampler, mapped to t = s / (1 + s)."""
    sigmas = [t / (1 - t) for t in karras_flow_times(15)]
    expected = [80, 53.6, 35.0, 22.2, 13.7, 8.14, 4.64, 2.52, 1.29, 0.613, 0.268, 0.104, 0.035, 0.0097, 0.002]
    for got, want in zip(sigmas, expected, strict=True):
        assert got == pytest.approx(want, rel=6e-3)


@pytest.mark.parametrize("schedule", ["linear", "karras"])
def test_sampler_determinism(tiny: MultiViewDiT, schedule: str) -> None:
    """Same seed gives identical samples, another seed differs; memory frames are returned untouched."""
    inputs = _inputs()
    sampler = FlowSampler(num_steps=3, schedule=schedule)

    def run(seed: int) -> torch.Tensor:
        return sampler(tiny, **inputs, task_ids=torch.tensor([1]), generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert a.shape == inputs["latents"].shape
    assert torch.equal(a, b)
    assert not torch.allclose(a[:, :, :, 4], c[:, :, :, 4])
    assert torch.equal(a[:, :, :, :4], inputs["latents"][:, :, :, :4])
    assert torch.isfinite(a).all()


@pytest.fixture(scope="module")
def causal() -> MultiViewDiT:
    torch.manual_seed(3)
    return build_dit("tiny", memory_attention="causal").eval()


def test_causal_memory_ignores_the_future_and_full_attention_does_not(tiny: MultiViewDiT, causal) -> None:
    """With causal memory, changing the future frame leaves every memory token's output exactly as it was."""
    inputs = _inputs()
    other = dict(inputs, latents=inputs["latents"].clone(), traj=inputs["traj"].clone())
    other["latents"][:, :, :, 4] += 1.0
    other["traj"][:, :, :, 4] = -other["traj"][:, :, :, 4]
    for model, memory_moves in ((causal, False), (tiny, True)):
        a, b = _forward(model, inputs), _forward(model, other)
        assert memory_moves == (not torch.equal(a[:, :, :, :4], b[:, :, :, :4]))
        assert not torch.allclose(a[:, :, :, 4], b[:, :, :, 4])


def test_cached_memory_gives_the_masked_full_pass(causal: MultiViewDiT) -> None:
    """Future frames run alone against encode_memory's keys/values equal the future of the full masked pass."""
    inputs = _inputs(seed=1, batch=2)
    x = assemble_inputs(**inputs)
    t = frame_timesteps(torch.tensor([0.7, 0.2]), inputs["cond_mask"])
    task = torch.tensor([0, 1])
    with torch.no_grad():
        full = causal(x, t, task_ids=task).sample
        memory = causal.encode_memory(x[:, :, :, :4], t[:, :4], task_ids=task)
        future = causal(x[:, :, :, 4:], t[:, 4:], task_ids=task, memory=memory).sample
    assert memory.num_frames == 4 and memory.batch == 2 * V and len(memory.keys_values) == 4
    torch.testing.assert_close(future, full[:, :, :, 4:], atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="memory frames only"):
        causal.encode_memory(x, t)
    with pytest.raises(ValueError, match="needs memory_attention='causal'"):
        build_dit("tiny").encode_memory(x[:, :, :, :4], t[:, :4])
    with pytest.raises(ValueError, match="stacked views"):
        causal(x[:1, :, :, 4:], t[:1, 4:], memory=memory)
    with pytest.raises(ValueError, match="memory_attention must be one of"):
        build_dit("tiny", memory_attention="sliding")


def test_sampler_with_cached_memory_equals_the_uncached_loop(causal, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sampler's cached path draws what the plain loop over the masked network draws, seed for seed."""
    import genie_env.models.gesim.flow as flow

    inputs = _inputs(seed=2)
    sampler = FlowSampler(num_steps=3)
    calls: list[int] = []
    encode = causal.encode_memory
    monkeypatch.setattr(causal, "encode_memory", lambda *a, **k: calls.append(1) or encode(*a, **k))
    cached = sampler(causal, **inputs, generator=torch.Generator().manual_seed(0))
    assert calls == [1]
    monkeypatch.setattr(flow, "memory_prefix", lambda cond_mask: 0)
    plain = sampler(causal, **inputs, generator=torch.Generator().manual_seed(0))
    assert calls == [1]
    torch.testing.assert_close(cached, plain, atol=1e-4, rtol=1e-4)
    assert torch.equal(cached[:, :, :, :4], inputs["latents"][:, :, :, :4])


def test_causal_memory_gradients_survive_gradient_checkpointing() -> None:
    """Checkpointed blocks recompute with the same memory mask: identical gradients with and without."""
    torch.manual_seed(4)
    model = build_dit("tiny", memory_attention="causal")
    x = assemble_inputs(**_inputs(seed=5))
    t = frame_timesteps(torch.tensor([0.6]), torch.tensor([[1, 1, 1, 1, 0]]))
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.enable_gradient_checkpointing()
        model(x, t).sample[:, :, :, 4].square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-6, rtol=1e-5)


def test_memory_prefix() -> None:
    from genie_env.models.gesim.flow import memory_prefix

    assert memory_prefix(torch.tensor([[1, 1, 0], [1, 1, 0]])) == 2
    assert memory_prefix(torch.tensor([[1, 1, 0], [1, 0, 0]])) == 0  # rows differ
    assert memory_prefix(torch.tensor([[1, 0, 1]])) == 0  # not a prefix
    assert memory_prefix(torch.tensor([[1, 1, 1]])) == 0  # nothing to sample


class _ExactVelocity(torch.nn.Module):
    """Stands in for a DiT that knows the flow target is zero: ``v = x_t / t`` (``x_t = t * eps``)."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.config = build_dit("tiny", target=target).config

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **_: object) -> object:
        t = timesteps[:, None, None, :, None, None]
        return type("Out", (), {"sample": x[:, :, :16] / t.clamp(min=1e-6)})()


def test_residual_target_round_trip_and_anchor() -> None:
    """The residual target is zero for a frozen scene and maps back exactly; the anchor is the newest memory."""
    inputs = _inputs(batch=2)
    x, cond = inputs["latents"], torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    torch.testing.assert_close(newest_memory(x, cond)[0, :, :, 0], x[0, :, :, 3])
    torch.testing.assert_close(newest_memory(x, cond)[1, :, :, 0], x[1, :, :, 1])
    model = build_dit("tiny", target="residual", residual_scale=4.0)
    flow = to_flow_target(model, x, cond)
    assert torch.equal(flow[:, :, :, :1], x[:, :, :, :1])  # memory frames stay latents
    torch.testing.assert_close(flow[0, :, :, 4], 4.0 * (x[0, :, :, 4] - x[0, :, :, 3]))
    torch.testing.assert_close(from_flow_target(model, flow, x, cond), x)
    frozen = x.clone()
    frozen[0, :, :, 4] = frozen[0, :, :, 3]
    assert to_flow_target(model, frozen, cond)[0, :, :, 4].abs().max() == 0
    latent_model = build_dit("tiny")
    assert torch.equal(to_flow_target(latent_model, x, cond), x)
    with pytest.raises(ValueError, match="target"):
        build_dit("tiny", target="x0")
    with pytest.raises(ValueError, match="at least one memory frame"):
        newest_memory(x, torch.zeros(2, 5))


@pytest.mark.parametrize("target", ["latent", "residual"])
def test_sampler_zero_flow_gives_copy_last_under_residual(target: str) -> None:
    """A flow that lands on zero means a blank latent (latent target) or the newest memory frame (residual)."""
    inputs = _inputs()
    out = FlowSampler(num_steps=4)(_ExactVelocity(target), **inputs, generator=torch.Generator().manual_seed(0))
    want = inputs["latents"][:, :, :, 3] if target == "residual" else torch.zeros_like(out[:, :, :, 4])
    torch.testing.assert_close(out[:, :, :, 4], want, atol=1e-5, rtol=0)


def test_residual_training_target(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the residual target the perfect prediction is ``eps - scale * (future - memory)``: loss 0."""
    model = build_dit("tiny", target="residual", residual_scale=2.0)
    inputs = _inputs()
    x = inputs["latents"]
    seen = {}

    def perfect(hidden: torch.Tensor, timesteps: torch.Tensor, **_: object) -> object:
        t = timesteps[0, -1]
        x_t = hidden[:, :, :16]
        target = 2.0 * (x[:, :, :, 4:] - x_t[:, :, :, 3:4])  # the anchor is the (augmented) memory as fed
        eps = (x_t[:, :, :, 4:] - (1 - t) * target) / t
        seen["v"] = torch.cat([torch.zeros_like(x_t[:, :, :, :4]), eps - target], dim=3)
        return type("Out", (), {"sample": seen["v"]})()

    monkeypatch.setattr(model, "forward", perfect)
    loss, _ = flow_matching_step(model, **inputs, generator=torch.Generator().manual_seed(0), memory_noise=0.1)
    assert loss.item() < 1e-8


# --- VAE -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("tiny").eval()


@pytest.mark.parametrize(("frames", "latent_frames"), [(1, 1), (5, 2), (9, 3)])
def test_vae_causal_shapes(vae, frames: int, latent_frames: int) -> None:
    """A single frame -> 1 latent frame, a 4n+1 clip -> n+1; decoding inverts the shapes, values in [-1, 1]."""
    x = torch.rand(2, 3, frames, 32, 48) * 2 - 1
    with torch.no_grad():
        z = vae.encode_frames(x, generator=torch.Generator().manual_seed(0))
        y = vae.decode_latents(z)
    assert z.shape == (2, 16, latent_frames, 4, 6)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1


def test_vae_per_frame_and_errors(vae) -> None:
    """Per-frame encoding (GE-Sim memory) matches encoding each frame alone; bad clip lengths are rejected."""
    x = torch.rand(1, 3, 4, 16, 16) * 2 - 1
    with torch.no_grad():
        z = vae.encode_frames(x, per_frame=True, sample=False)
        z2 = vae.encode_frames(x[:, :, 2:3], sample=False)
    assert z.shape == (1, 16, 4, 2, 2)
    torch.testing.assert_close(z[:, :, 2:3], z2)
    with pytest.raises(ValueError, match="4n \\+ 1"):
        vae.encode_frames(x)


def test_vae_shortcuts_equal_diffusers_own_path() -> None:
    """Single-frame convolutions, the cache-free lone-frame path and the fused RMS norm give diffusers' own
    ``encode`` / ``decode`` result, for frames and clips."""
    from diffusers.models.autoencoders.autoencoder_kl_wan import WanCausalConv3d, WanRMS_norm

    from genie_env.models.gesim.vae import FusedRMSNorm, SingleFrameCausalConv3d

    torch.manual_seed(1)
    fast = build_vae("tiny").eval()
    reference = build_vae("tiny").eval()
    reference.load_state_dict(fast.state_dict())
    frame = torch.rand(3, 3, 1, 32, 48) * 2 - 1
    clip = torch.rand(2, 3, 5, 32, 48) * 2 - 1

    def encode_ref(x: torch.Tensor) -> torch.Tensor:  # diffusers' API, feature cache and all
        return reference.normalize_latents(reference.encode(x).latent_dist.mode())

    def decode_ref(z: torch.Tensor) -> torch.Tensor:
        return reference.decode(reference.denormalize_latents(z)).sample

    with torch.no_grad():
        z_frame, z_clip = (fast.encode_frames(x, sample=False) for x in (frame, clip))
        z_frame_ref, z_clip_ref = encode_ref(frame), encode_ref(clip)
        y_frame, y_clip = fast.decode_latents(z_frame_ref), fast.decode_latents(z_clip_ref)
        y_frame_ref, y_clip_ref = decode_ref(z_frame_ref), decode_ref(z_clip_ref)
    assert any(type(m) is SingleFrameCausalConv3d for m in fast.modules())
    assert any(type(m) is FusedRMSNorm for m in fast.modules())
    assert all(type(m) is WanCausalConv3d for m in reference.modules() if isinstance(m, WanCausalConv3d))
    assert all(type(m) is WanRMS_norm for m in reference.modules() if isinstance(m, WanRMS_norm))
    for got, want in ((z_frame, z_frame_ref), (z_clip, z_clip_ref), (y_frame, y_frame_ref), (y_clip, y_clip_ref)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert fast.state_dict().keys() == reference.state_dict().keys()


def test_vae_latent_normalisation() -> None:
    """Latents are normalised with the config's per-channel mean / std, and the mapping inverts."""
    mean, std = [float(i) for i in range(16)], [0.5 + i for i in range(16)]
    vae = build_vae("tiny", latents_mean=mean, latents_std=std)
    z = torch.randn(1, 16, 2, 3, 3)
    normed = vae.normalize_latents(z)
    torch.testing.assert_close(normed[:, 5], (z[:, 5] - 5.0) / 5.5)
    torch.testing.assert_close(vae.denormalize_latents(normed), z)


# --- presets ---------------------------------------------------------------------------------------------


def test_paper_presets_on_meta() -> None:
    """The published sizes instantiate without memory: DiT ~2B parameters (within 10%), Wan 2.1 VAE."""
    dit = build_dit("paper", device="meta")
    n_dit = count_parameters(dit)
    assert abs(n_dit - 2e9) / 2e9 < 0.10, n_dit
    assert dit.cross_view_block_ids == list(range(0, 28, 3))  # 10 joint blocks of 28
    assert dit.patch_embed.proj.in_features == 27 * 1 * 2 * 2 and dit.proj_out.out_features == 64
    vae = build_vae("paper", device="meta")
    assert len(vae.config.latents_mean) == len(vae.config.latents_std) == 16
    assert 100e6 < count_parameters(vae) < 150e6
