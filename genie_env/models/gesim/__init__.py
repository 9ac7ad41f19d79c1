"""GE-Sim (Genie-Envisioner) networks: multi-view flow-matching DiT, Wan VAE wrapper, flow sampler."""

from genie_env.models.gesim.attention import CrossViewAttnProcessor
from genie_env.models.gesim.dit import INPUT_CHANNELS, LATENT_CHANNELS, MemoryKV, MultiViewDiT, assemble_inputs
from genie_env.models.gesim.flow import (
    MEMORY_TIMESTEP,
    FlowSampler,
    add_noise,
    flow_matching_loss,
    flow_matching_step,
    frame_timesteps,
    karras_flow_times,
    linear_flow_times,
    noise_memory,
    sample_flow_times,
)
from genie_env.models.gesim.presets import DIT_PRESETS, VAE_PRESETS, build_dit, build_vae, count_parameters
from genie_env.models.gesim.vae import GeSimVAE

__all__ = [
    "MemoryKV",
    "DIT_PRESETS",
    "INPUT_CHANNELS",
    "LATENT_CHANNELS",
    "MEMORY_TIMESTEP",
    "VAE_PRESETS",
    "CrossViewAttnProcessor",
    "FlowSampler",
    "GeSimVAE",
    "MultiViewDiT",
    "add_noise",
    "assemble_inputs",
    "build_dit",
    "build_vae",
    "count_parameters",
    "flow_matching_loss",
    "flow_matching_step",
    "frame_timesteps",
    "karras_flow_times",
    "linear_flow_times",
    "noise_memory",
    "sample_flow_times",
]
