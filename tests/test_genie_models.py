"""Correctness tests for the Genie networks at toy size (16x16 frames, CPU, a few seconds in total).

Each test guards against a bug that shipped in at least one public Genie re-implementation: leaking future frames,
LAM actions read at the wrong time, MASK colliding with a real code, loss targets overwritten by the mask fill,
samplers that never feed revealed tokens back, collapsed codebooks and missing straight-through gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.modeling_utils import ModelMixin

from genie_env.models.genie import (
    PAPER_PARAMETERS,
    DynamicsModel,
    LatentActionModel,
    MaskGITRollout,
    STTransformer,
    VectorQuantizer,
    VideoTokenizer,
    maskgit_sample,
    parameter_counts,
    sample_next_frame,
)

SIZE = 16  # frame side in pixels
BLOCK = {"mlp_ratio": 2.0}


def make_tokenizer(**overrides: object) -> VideoTokenizer:
    kwargs = {
        "image_height": SIZE,
        "image_width": SIZE,
        "patch_size": 4,
        "codebook_size": 32,
        "latent_dim": 8,
        "encoder_dim": 32,
        "encoder_depth": 2,
        "encoder_heads": 2,
        "encoder_head_dim": 16,
        "decoder_dim": 32,
        "decoder_depth": 2,
        "decoder_heads": 2,
        "decoder_head_dim": 16,
        **BLOCK,
    }
    return VideoTokenizer(**{**kwargs, **overrides})


def make_lam(**overrides: object) -> LatentActionModel:
    kwargs = {
        "image_height": SIZE,
        "image_width": SIZE,
        "patch_size": 8,
        "num_actions": 8,
        "action_dim": 8,
        "encoder_dim": 32,
        "encoder_depth": 2,
        "encoder_heads": 2,
        "encoder_head_dim": 16,
        "decoder_dim": 32,
        "decoder_depth": 2,
        "decoder_heads": 2,
        "decoder_head_dim": 16,
        **BLOCK,
    }
    lam = LatentActionModel(**{**kwargs, **overrides})
    # A residual LAM starts as an exact copy of the last frame (zero output layer), which would hide every
    # dependence on the actions; give the output layer weights like a trained model's.
    torch.nn.init.normal_(lam.decoder_out.weight, std=0.02)
    return lam


def make_dynamics(**overrides: object) -> DynamicsModel:
    kwargs = {
        "codebook_size": 32,
        "num_actions": 8,
        "grid_height": 4,
        "grid_width": 4,
        "dim": 32,
        "depth": 2,
        "num_heads": 2,
        "head_dim": 16,
        "qk_norm": True,
        "context_frames": 16,
        **BLOCK,
    }
    return DynamicsModel(**{**kwargs, **overrides})


def random_frames(batch: int = 2, frames: int = 5) -> torch.Tensor:
    return torch.rand(batch, frames, 3, SIZE, SIZE) * 2 - 1


def random_tokens(batch: int = 2, frames: int = 5, codebook: int = 32) -> torch.Tensor:
    return torch.randint(0, codebook, (batch, frames, 4, 4))


def random_actions(batch: int = 2, transitions: int = 4, num_actions: int = 8) -> torch.Tensor:
    return torch.randint(0, num_actions, (batch, transitions))


def differs(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).abs().max() > 1e-6)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# -- serialisation -------------------------------------------------------------------------------------------------


def _outputs(model: torch.nn.Module) -> list[torch.Tensor]:
    torch.manual_seed(1)
    if isinstance(model, VideoTokenizer):
        frames = random_frames()
        return [model.encode_latents(frames), model.decode(model.encode(frames))]
    if isinstance(model, LatentActionModel):
        frames = random_frames()
        return [model.encode_latents(frames), model.decode(frames[:, :-1], random_actions())]
    assert isinstance(model, DynamicsModel)
    return [model.logits(random_tokens(), random_actions())]


@pytest.mark.parametrize("factory", [make_tokenizer, make_lam, make_dynamics], ids=["tokenizer", "lam", "dynamics"])
def test_save_load_round_trip(factory: Callable[[], ModelMixin], tmp_path: Path) -> None:
    model = factory().eval()
    for module in model.modules():  # non-default buffers must survive too
        if isinstance(module, VectorQuantizer):
            module.steps_unused.fill_(7)
    model.save_pretrained(tmp_path)
    reloaded = type(model).from_pretrained(tmp_path).eval()

    public = {k: v for k, v in model.config.items() if not k.startswith("_")}
    assert {k: reloaded.config[k] for k in public} == public
    with torch.no_grad():
        for before, after in zip(_outputs(model), _outputs(reloaded), strict=True):
            assert torch.equal(before, after)
    state, state_reloaded = model.state_dict(), reloaded.state_dict()
    assert state.keys() == state_reloaded.keys()
    assert all(torch.equal(state[k], state_reloaded[k]) for k in state)


# -- causality -----------------------------------------------------------------------------------------------------


@torch.no_grad()
def test_tokenizer_is_causal_in_time() -> None:
    tokenizer = make_tokenizer().eval()
    frames = random_frames()
    perturbed = frames.clone()
    perturbed[:, 3] = random_frames(2, 1)[:, 0]  # change frame t + 1 with t = 2

    z, z_perturbed = tokenizer.encode_latents(frames), tokenizer.encode_latents(perturbed)
    torch.testing.assert_close(z[:, :3], z_perturbed[:, :3], rtol=0, atol=1e-6)
    assert differs(z[:, 3], z_perturbed[:, 3])

    ids = tokenizer.encode(frames)
    ids_perturbed = ids.clone()
    ids_perturbed[:, 3] = (ids[:, 3] + 1) % tokenizer.config.codebook_size
    recon, recon_perturbed = tokenizer.decode(ids), tokenizer.decode(ids_perturbed)
    torch.testing.assert_close(recon[:, :3], recon_perturbed[:, :3], rtol=0, atol=1e-6)
    assert differs(recon[:, 3], recon_perturbed[:, 3])


@torch.no_grad()
def test_dynamics_is_causal_in_time() -> None:
    dynamics = make_dynamics().eval()
    tokens, actions = random_tokens(), random_actions()
    tokens2, actions2 = tokens.clone(), actions.clone()
    tokens2[:, 3:] = (tokens[:, 3:] + 1) % 32  # frames >= 3 ...
    actions2[:, 2:] = (actions[:, 2:] + 1) % 8  # ... and the actions leading into them

    logits, logits2 = dynamics.logits(tokens, actions), dynamics.logits(tokens2, actions2)
    torch.testing.assert_close(logits[:, :3], logits2[:, :3], rtol=0, atol=1e-6)
    assert differs(logits[:, 3], logits2[:, 3])


@torch.no_grad()
def test_dynamics_conditions_frame_on_previous_action() -> None:
    dynamics = make_dynamics().eval()
    tokens, actions = random_tokens(), random_actions()
    actions2 = actions.clone()
    actions2[:, 1] = (actions[:, 1] + 1) % 8  # a_1 leads from frame 1 to frame 2
    logits, logits2 = dynamics.logits(tokens, actions), dynamics.logits(tokens, actions2)
    torch.testing.assert_close(logits[:, :2], logits2[:, :2], rtol=0, atol=1e-6)
    assert differs(logits[:, 2], logits2[:, 2])


# -- latent action model -------------------------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("encoder_difference", [False, True])
def test_lam_action_sees_next_frame_but_not_later_ones(encoder_difference: bool) -> None:
    lam = make_lam(encoder_difference=encoder_difference).eval()
    frames = random_frames()
    latents = lam.encode_latents(frames)  # (B, 4, action_dim); entry t explains x_t -> x_{t+1}
    assert latents.shape == (2, 4, 8)
    t = 1

    later = frames.clone()
    later[:, t + 2] = random_frames(2, 1)[:, 0]
    latents_later = lam.encode_latents(later)
    torch.testing.assert_close(latents[:, : t + 1], latents_later[:, : t + 1], rtol=0, atol=1e-6)
    assert differs(latents[:, t + 1], latents_later[:, t + 1])

    nxt = frames.clone()
    nxt[:, t + 1] = random_frames(2, 1)[:, 0]
    assert differs(latents[:, t], lam.encode_latents(nxt)[:, t])

    ids = lam.infer_actions(frames)
    assert ids.shape == (2, 4) and ids.dtype == torch.int64
    assert int(ids.min()) >= 0 and int(ids.max()) < lam.config.num_actions


@torch.no_grad()
def test_lam_decoder_cannot_bypass_the_action_bottleneck() -> None:
    lam = make_lam().eval()
    context = random_frames(2, 4)  # x_0 .. x_3
    actions = random_actions(2, 4)  # a_0 .. a_3
    t = 1
    pred = lam.decode(context, actions)  # entry t predicts x_{t+1}

    # x_{t+1} changes but a_t is held fixed: the prediction of x_{t+1} must not move.
    leaked = context.clone()
    leaked[:, t + 1] = random_frames(2, 1)[:, 0]
    torch.testing.assert_close(pred[:, : t + 1], lam.decode(leaked, actions)[:, : t + 1], rtol=0, atol=1e-6)

    # a_t changes: the prediction of x_{t+1} must move, earlier predictions must not.
    other = actions.clone()
    other[:, t] = (actions[:, t] + 1) % lam.config.num_actions
    pred_other = lam.decode(context, other)
    torch.testing.assert_close(pred[:, :t], pred_other[:, :t], rtol=0, atol=1e-6)
    assert differs(pred[:, t], pred_other[:, t])


def test_lam_logs_what_its_actions_are_worth() -> None:
    """``action_gain_psnr``: PSNR with the inferred actions minus with another clip's; 0 when actions are ignored."""
    lam = make_lam()
    _, logs = lam({"frames": random_frames(2, 4)})
    assert logs["action_gain_psnr"] != 0.0
    torch.nn.init.zeros_(lam.action_in.weight)
    torch.nn.init.zeros_(lam.action_in.bias)
    _, logs = lam({"frames": random_frames(2, 4)})
    assert logs["action_gain_psnr"] == 0.0


def test_lam_continuous_phase_then_codes(tmp_path: Path) -> None:
    """``continuous_steps``: the decoder gets the raw latent for that many training steps, then the codes."""
    lam = make_lam(continuous_steps=2)
    frames = random_frames(2, 4)
    seen: list[torch.Tensor] = []
    lam.action_in.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    for _ in range(3):
        lam({"frames": frames})
    codes = lam.quantizer.codes()
    on_a_code = [
        bool(torch.isclose(x.reshape(-1, 8) @ codes.t(), torch.tensor(1.0), atol=1e-5).any(-1).all())
        for x in seen[::2]
    ]  # every forward also decodes the rolled batch
    assert on_a_code == [False, False, True] and int(lam.train_steps) == 3
    lam.save_pretrained(tmp_path)
    assert int(LatentActionModel.from_pretrained(tmp_path).train_steps) == 3  # a resumed run keeps its phase
    lam.eval()
    lam({"frames": frames})
    assert int(lam.train_steps) == 3


@torch.no_grad()
def test_residual_lam_starts_as_copy_last() -> None:
    lam = LatentActionModel(
        image_height=SIZE,
        image_width=SIZE,
        patch_size=8,
        encoder_dim=32,
        encoder_depth=1,
        decoder_dim=32,
        decoder_depth=1,
        encoder_heads=2,
        encoder_head_dim=16,
        decoder_heads=2,
        decoder_head_dim=16,
    ).eval()
    frames = random_frames()
    pred, _ = lam.reconstruct(frames)
    torch.testing.assert_close(pred, frames[:, :-1], rtol=0, atol=0)


@torch.no_grad()
def test_motion_weight_charges_errors_on_moving_pixels_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``motion_weight`` the same squared error costs more on a pixel that moves than on a static one."""
    kwargs = dict(image_height=SIZE, image_width=SIZE, patch_size=8, encoder_dim=32, encoder_depth=1, decoder_dim=32)
    kwargs |= dict(decoder_depth=1, encoder_heads=2, encoder_head_dim=16, decoder_heads=2, decoder_head_dim=16)
    kwargs |= dict(diversity_weight=0.0, variance_weight=0.0, commitment_weight=0.0)
    frames = torch.zeros(1, 2, 3, SIZE, SIZE)
    frames[:, 1, :, :2, :2] = 1.0  # a moving 2x2 corner

    def loss_with_error_at(model: LatentActionModel, row: int) -> float:
        """The loss's increase (over a perfect prediction) from an error of 0.5 at pixel ``(row, 0)``."""
        losses = []
        for error in (0.0, 0.5):
            pred = frames[:, 1:].clone()
            pred[:, :, :, row, 0] += error
            monkeypatch.setattr(model, "decode", lambda *_, p=pred: p)
            losses.append(model({"frames": frames})[0].item())
        return losses[1] - losses[0]

    plain, weighted = LatentActionModel(**kwargs), LatentActionModel(**kwargs, motion_weight=10.0)
    assert loss_with_error_at(plain, 0) == pytest.approx(loss_with_error_at(plain, SIZE - 1))
    assert loss_with_error_at(weighted, 0) > 5 * loss_with_error_at(weighted, SIZE - 1)


def test_diversity_term_prefers_spread_actions() -> None:
    quantizer = VectorQuantizer(8, 4, restart_after_steps=0)
    codes = quantizer.codes().detach()
    collapsed = codes[:1].repeat(64, 1)
    spread = codes.repeat(8, 1)
    assert quantizer.diversity_loss(spread).item() < quantizer.diversity_loss(collapsed).item() - 1.0
    # Gradients reach the encoder outputs, so the term can push a collapsed encoder apart.
    z = (collapsed + 0.01 * torch.randn_like(collapsed)).requires_grad_()
    quantizer.diversity_loss(z).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # The variance hinge is lower for spread outputs than for bunched ones, and pushes bunched ones apart.
    assert quantizer.variance_hinge(spread).item() < 0.5 * quantizer.variance_hinge(collapsed).item()
    z = (collapsed + 0.01 * torch.randn_like(collapsed)).requires_grad_()
    quantizer.variance_hinge(z).backward()
    step = F.normalize(z - 0.1 * z.grad, dim=-1).detach()
    assert step.var(dim=0).sum() > F.normalize(z.detach(), dim=-1).var(dim=0).sum()


@torch.no_grad()
def test_lam_reconstruction_sees_the_target_only_through_its_action() -> None:
    lam = make_lam().eval()
    frames = random_frames()
    t = 1
    nudged = frames.clone()
    nudged[:, t + 1] += 1e-3 * torch.randn_like(nudged[:, t + 1])  # small enough to keep every action id
    pred, vq = lam.reconstruct(frames)
    pred_nudged, vq_nudged = lam.reconstruct(nudged)
    assert torch.equal(vq.ids, vq_nudged.ids)
    torch.testing.assert_close(pred[:, : t + 1], pred_nudged[:, : t + 1], rtol=0, atol=1e-6)
    assert differs(pred[:, t + 1], pred_nudged[:, t + 1])


# -- dynamics training ---------------------------------------------------------------------------------------------


def test_mask_id_is_not_a_code_and_is_never_sampled() -> None:
    dynamics = make_dynamics().eval()
    assert dynamics.mask_id == dynamics.config.codebook_size == 32
    assert dynamics.token_embed.num_embeddings == 33
    logits = dynamics.logits(random_tokens(), random_actions())
    assert logits.shape[-1] == 32

    rollout = MaskGITRollout(dynamics, steps=4, temperature=5.0)  # hot: sample all over the vocabulary
    rollout.reset(random_tokens(8, 1))
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        tokens = rollout.step(random_actions(8, 1)[:, 0], generator=generator)
        assert int(tokens.min()) >= 0 and int(tokens.max()) < 32


def test_loss_targets_are_the_original_ids() -> None:
    dynamics = make_dynamics()
    tokens, actions = random_tokens(4, 4), random_actions(4, 3)
    tokens_before = tokens.clone()

    loss, logs = dynamics({"tokens": tokens, "actions": actions}, generator=torch.Generator().manual_seed(3))
    inputs, mask = dynamics.mask_tokens(tokens, generator=torch.Generator().manual_seed(3))

    assert torch.equal(tokens, tokens_before), "the batch must not be modified in place"
    assert not mask[:, 0].any(), "frame 0 is never masked"
    assert torch.equal(inputs == dynamics.mask_id, mask)
    assert torch.equal(inputs[~mask], tokens[~mask])
    masked_rate = mask[:, 1:].flatten(1).float().mean(1)
    assert bool((masked_rate > 0.25).all()), "per-sample mask rates are drawn from U(0.5, 1)"
    expected = F.cross_entropy(dynamics.logits(inputs, actions)[mask], tokens[mask])
    torch.testing.assert_close(loss, expected)
    assert logs["mask_fraction"] == pytest.approx(mask[:, 1:].float().mean().item())


def test_dynamics_learns_a_fixed_batch() -> None:
    dynamics = make_dynamics()
    batch = {"tokens": random_tokens(4, 3), "actions": random_actions(4, 2)}
    optimizer = torch.optim.AdamW(dynamics.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    first = None
    for _ in range(40):
        loss, logs = dynamics(batch, generator=generator)
        first = logs["loss"] if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert logs["loss"] < 0.8 * first


# -- MaskGIT sampling ----------------------------------------------------------------------------------------------


@torch.no_grad()
def test_sampler_feeds_revealed_tokens_back_and_never_remasks() -> None:
    dynamics = make_dynamics().eval()
    past, actions = random_tokens(2, 2), random_actions(2, 1)
    next_action = random_actions(2, 1)[:, 0]
    seen_inputs: list[torch.Tensor] = []

    def logits_fn(current: torch.Tensor) -> torch.Tensor:
        seen_inputs.append(current.clone())
        frame = current.reshape(2, 1, 4, 4)
        logits = dynamics.logits(torch.cat([past, frame], 1), torch.cat([actions, next_action[:, None]], 1))
        return logits[:, -1].reshape(2, 16, -1)

    trace: list[torch.Tensor] = []
    steps = 6
    out = maskgit_sample(
        logits_fn, 2, 16, dynamics.mask_id, steps=steps, temperature=1.0, generator=torch.Generator(), trace=trace
    )
    mask_id = dynamics.mask_id
    assert len(trace) == steps and torch.equal(trace[-1], out)
    assert bool((seen_inputs[0] == mask_id).all())
    num_masked = [int((t == mask_id).sum()) for t in trace]  # over both samples
    assert num_masked == sorted(num_masked, reverse=True) and num_masked[-1] == 0
    assert all(a > b for a, b in zip([2 * 16, *num_masked], num_masked, strict=False)), "every step reveals a token"
    for k in range(steps - 1):
        assert torch.equal(seen_inputs[k + 1], trace[k]), "step k+1 must see the tokens revealed up to step k"
        revealed = trace[k] != mask_id
        for later in trace[k + 1 :]:
            assert torch.equal(later[revealed], trace[k][revealed]), "revealed tokens stay fixed"


@torch.no_grad()
@pytest.mark.parametrize("choice_temperature", [0.0, 1.0])
def test_cached_rollout_matches_uncached_reference(choice_temperature: float) -> None:
    # A window shorter than the rollout exercises the sliding cache against the banded mask of the full pass.
    dynamics = make_dynamics(context_frames=3).eval()
    prompt, prompt_actions = random_tokens(3, 2), random_actions(3, 1)
    tokens, actions = prompt, prompt_actions
    rollout = MaskGITRollout(dynamics, steps=5, temperature=1.5, choice_temperature=choice_temperature)
    rollout.reset(prompt, prompt_actions)
    for step in range(5):
        action = random_actions(3, 1)[:, 0]
        cached_logits = dynamics.next_frame_logits(torch.full((3, 4, 4), dynamics.mask_id), action, rollout.cache)
        full_tokens = torch.cat([tokens, torch.full((3, 1, 4, 4), dynamics.mask_id)], 1)
        full_logits = dynamics.logits(full_tokens, torch.cat([actions, action[:, None]], 1))[:, -1]
        torch.testing.assert_close(cached_logits, full_logits, rtol=1e-4, atol=1e-5)

        reference = sample_next_frame(
            dynamics,
            tokens,
            actions,
            action,
            steps=5,
            temperature=1.5,
            choice_temperature=choice_temperature,
            generator=torch.Generator().manual_seed(step),
        )
        cached = rollout.step(action, generator=torch.Generator().manual_seed(step))
        assert torch.equal(reference, cached)
        tokens, actions = torch.cat([tokens, cached[:, None]], 1), torch.cat([actions, action[:, None]], 1)
    assert rollout.cache is not None and rollout.cache.num_frames == 2  # context_frames - 1


@torch.no_grad()
@pytest.mark.parametrize("context_frames", [3, None])
def test_cached_frames_match_the_clip_at_any_absolute_time(context_frames: int | None) -> None:
    # The ring cache stores keys rotated at absolute times: frame-by-frame stepping equals the causal (windowed)
    # clip pass, and starting the stream at time 10^6 changes nothing (RoPE is relative, angles in float64).
    torch.manual_seed(0)
    stack = STTransformer(32, 2, 2, 16, context_frames=context_frames).eval()
    clip = torch.randn(2, 7, 5, 32)
    full = stack(clip)
    for start in (0, 10**6):
        cache = stack.new_cache(2)
        cache.next_time = start
        stepped = torch.cat([stack(clip[:, t : t + 1], cache=cache, update_cache=True) for t in range(7)], 1)
        torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-5)
        assert cache.num_frames == (7 if context_frames is None else context_frames - 1)
    prompt_cache = stack.new_cache(2)
    torch.testing.assert_close(stack(clip, cache=prompt_cache, update_cache=True), full, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="update_cache"):
        stack(clip[:, :2], cache=prompt_cache)


@torch.no_grad()
def test_loading_a_prompt_into_some_streams_equals_a_fresh_start() -> None:
    # An env restarting from a multi-frame prompt mid-rollout: its stream must behave exactly like a fresh cache
    # holding only the prompt, whatever time the shared cache has reached, and the other stream must not notice.
    torch.manual_seed(0)
    stack = STTransformer(32, 2, 2, 16, context_frames=4).eval()
    history, prompt, probe = torch.randn(2, 6, 5, 32), torch.randn(1, 2, 5, 32), torch.randn(2, 1, 5, 32)
    shared, untouched = stack.new_cache(2), stack.new_cache(2)
    stack(history, cache=shared, update_cache=True)
    stack(history, cache=untouched, update_cache=True)
    fresh = stack.new_cache(1)
    stack(prompt, cache=fresh, update_cache=True)
    shared.load_streams(torch.tensor([True, False]), fresh)
    out = stack(probe, cache=shared)
    torch.testing.assert_close(out[:1], stack(probe[:1], cache=fresh), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out[1:], stack(probe, cache=untouched)[1:], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="streams"):
        shared.load_streams(torch.tensor([True, True]), fresh)


@torch.no_grad()
def test_seeded_sampling_is_deterministic() -> None:
    dynamics = make_dynamics().eval()
    prompt, action = random_tokens(2, 1), random_actions(2, 1)[:, 0]

    def run(seed: int) -> torch.Tensor:
        rollout = MaskGITRollout(dynamics, steps=4, temperature=1.0)
        rollout.reset(prompt)
        generator = torch.Generator().manual_seed(seed)
        return torch.stack([rollout.step(action, generator=generator) for _ in range(3)], 1)

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


@torch.no_grad()
def test_restarting_one_env_forgets_only_its_history() -> None:
    dynamics = make_dynamics().eval()
    prompt, prompt_actions = random_tokens(2, 2), random_actions(2, 1)
    actions = random_actions(2, 2)
    new_prompt = random_tokens(2, 1)[:, 0]
    restart = torch.tensor([True, False])
    restarted, continued = MaskGITRollout(dynamics, steps=3), MaskGITRollout(dynamics, steps=3)
    outputs = []
    for rollout, mask in ((restarted, restart), (continued, None)):
        rollout.reset(prompt, prompt_actions)
        rollout.step(actions[:, 0], generator=torch.Generator().manual_seed(0))
        generator = torch.Generator().manual_seed(1)
        outputs.append(rollout.step(actions[:, 1], generator, restart=mask, restart_tokens=new_prompt))
    assert torch.equal(outputs[0][0], new_prompt[0]), "a restarting env returns its new prompt"
    assert torch.equal(outputs[0][1], outputs[1][1]), "the other env steps as if nothing happened"
    assert restarted.cache is not None and restarted.cache.valid is not None and continued.cache is not None
    assert restarted.cache.valid[0].sum() == 1 and restarted.cache.valid[1].sum() == restarted.cache.num_frames

    probe, action = torch.full((2, 4, 4), dynamics.mask_id), torch.tensor([5, 5])
    logits = dynamics.next_frame_logits(probe, action, restarted.cache)
    # Env 0 now behaves exactly like a fresh episode that starts from its new prompt ...
    fresh = MaskGITRollout(dynamics)
    fresh.reset(new_prompt[:1, None])
    assert fresh.cache is not None
    expected = dynamics.next_frame_logits(probe[:1], action[:1], fresh.cache)
    torch.testing.assert_close(logits[:1], expected, rtol=1e-4, atol=1e-5)
    # ... while env 1 keeps its whole history.
    torch.testing.assert_close(logits[1], dynamics.next_frame_logits(probe, action, continued.cache)[1])


# -- quantiser -----------------------------------------------------------------------------------------------------


def test_dead_code_restart_revives_codes() -> None:
    inputs = torch.randn(256, 8).abs()  # every input lies in the positive orthant
    results = {}
    for restart_after in (0, 1):
        quantizer = VectorQuantizer(codebook_size=16, dim=8, restart_after_steps=restart_after).train()
        with torch.no_grad():  # code 0 points into the data, the other 15 away from it: all but one are dead
            quantizer.codebook[0] = 1.0
            quantizer.codebook[1:] = -1.0
        first = quantizer(inputs)
        second = quantizer(inputs)
        results[restart_after] = (first.usage.item(), second.usage.item(), quantizer)
    assert results[0][0] == results[0][1] == 1 / 16, "without restarts the dead codes stay dead"
    usage_before, usage_after, quantizer = results[1]
    assert usage_before == 1 / 16
    assert usage_after > 0.5, "restarted codes are drawn from encoder outputs and get used at once"
    codes = quantizer.codes()
    nearest_input_similarity = (codes[1:] @ F.normalize(inputs, dim=-1).t()).max(dim=1).values
    assert bool((nearest_input_similarity > 0.99).all()), "restarted codes sit on encoder outputs"


def _restart_worker(rank: int, init_file: str, results: dict) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # identical initial codebook on both ranks, as after DDP's initial broadcast
        quantizer = VectorQuantizer(codebook_size=16, dim=8, restart_after_steps=1).train()
        torch.manual_seed(100 + rank)  # ... but different data and RNG streams per rank
        for _ in range(3):
            quantizer(torch.randn(4, 8) + 10.0 * rank)  # rank 1's data would keep other codes alive locally
        results[rank] = (quantizer.codebook.detach().clone(), quantizer.steps_unused.clone())
    finally:
        torch.distributed.destroy_process_group()


def test_dead_code_restarts_stay_in_sync_across_ranks(tmp_path: Path) -> None:
    results = torch.multiprocessing.Manager().dict()
    torch.multiprocessing.spawn(_restart_worker, args=(str(tmp_path / "pg"), results), nprocs=2)
    (codes0, unused0), (codes1, unused1) = results[0], results[1]
    assert torch.equal(codes0, codes1) and torch.equal(unused0, unused1)


def test_straight_through_gradient_reaches_the_encoders() -> None:
    tokenizer = make_tokenizer()
    frames = random_frames()
    vq = tokenizer.quantizer(tokenizer.encode_latents(frames))
    recon = tokenizer._decode_codes(vq.quantized.flatten(2, 3))
    F.mse_loss(recon, frames).backward()  # reconstruction only: any encoder gradient must cross the STE
    for param in (tokenizer.encoder_in.weight, tokenizer.to_latent.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0
    assert tokenizer.quantizer.codebook.grad is None or tokenizer.quantizer.codebook.grad.abs().sum() == 0

    lam = make_lam()
    vq = lam.quantizer(lam.encode_latents(frames))
    F.mse_loss(lam.decode(frames[:, :-1], vq.quantized), frames[:, 1:]).backward()
    assert lam.to_action.weight.grad is not None and lam.to_action.weight.grad.abs().sum() > 0


# -- forward(batch) contract ---------------------------------------------------------------------------------------


def test_forward_returns_loss_and_logs() -> None:
    frames = random_frames()
    loss, logs = make_tokenizer()({"frames": frames})
    assert loss.ndim == 0 and loss.requires_grad
    assert {"loss", "recon_mse", "psnr", "vq_loss", "codebook_usage", "perplexity"} <= logs.keys()
    assert 0 < logs["codebook_usage"] <= 1 and 1 <= logs["perplexity"] <= 32

    loss, logs = make_lam()({"frames": frames})
    assert loss.requires_grad and {"recon_mse", "psnr", "action_usage", "action_perplexity"} <= logs.keys()

    loss, logs = make_dynamics()({"tokens": random_tokens(), "actions": random_actions()})
    assert loss.requires_grad and {"loss", "masked_accuracy", "mask_fraction"} <= logs.keys()


def test_tokenizer_round_trip_shapes_and_cached_decode() -> None:
    tokenizer = make_tokenizer(context_frames=3).eval()
    frames = random_frames(2, 5)
    ids = tokenizer.encode(frames)
    assert ids.shape == (2, 5, 4, 4) and ids.dtype == torch.int64
    full = tokenizer.decode(ids)
    assert full.shape == frames.shape and full.abs().max() <= 1
    cache = tokenizer.new_decode_cache(2)
    stepped = torch.cat([tokenizer.decode_step(ids[:, t : t + 1], cache) for t in range(5)], 1)
    torch.testing.assert_close(stepped, full, rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    frames = random_frames()
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = make_tokenizer(restart_after_steps=0)
        if checkpointing:
            model.enable_gradient_checkpointing()
        model({"frames": frames})[0].backward()
        grads.append(model.encoder_in.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# -- presets -------------------------------------------------------------------------------------------------------


def test_paper_presets_match_reported_sizes() -> None:
    counts = parameter_counts("paper")  # built on the meta device: no memory
    for component, reported in PAPER_PARAMETERS.items():
        assert abs(counts[component] - reported) / reported < 0.10, (component, counts[component])


def test_tiny_preset_is_small() -> None:
    counts = parameter_counts("tiny")
    assert all(count < 5e6 for count in counts.values()), counts
