"""Samplers: small stateless functions over a precomputed schedule, k-diffusion style.

Each sampler runs the steps ``start <= i < stop`` of a :class:`Schedule` and calls ``model(x, i)``
for the (already guided) model output at step ``i``. Noise that a sampler injects comes in as an
argument, so every frame of a video can see the same noise: with fixed z^T *and* fixed step noise,
the text-only steps give the same z^delta for every frame and can be computed once
(docs/design.md, "Real-time design").
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tpos_live.errors import UserError
from tpos_live.names import SAMPLERS

ModelFn = Callable[[torch.Tensor, int], torch.Tensor]



@dataclass(frozen=True)
class Schedule:
    """Timesteps and cumulative alphas of one sampling run, computed once per (sampler, steps)."""

    sampler: str
    timesteps: tuple[int, ...]  # DDPM timesteps, descending
    alphas: torch.Tensor  # (S,) float64: alpha_cumprod at timesteps[i]
    alphas_prev: torch.Tensor  # (S,) float64: alpha_cumprod at the step after i (final alpha after the last)
    prediction_type: str  # "epsilon" | "v_prediction"

    def __len__(self) -> int:
        return len(self.timesteps)

    def first_step_below(self, timestep: int) -> int:
        """Index of the first step whose timestep is < ``timestep`` (len(self) when none is)."""
        return next((i for i, t in enumerate(self.timesteps) if t < timestep), len(self.timesteps))


def make_schedule(scheduler_config: dict, sampler: str, steps: int) -> Schedule:
    """Build the schedule with diffusers' own timestep spacing for the model's scheduler config."""
    from diffusers import DDIMScheduler, LCMScheduler

    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    # PLMS (CompVis ldm, the official TPoS sampler) uses DDIM's uniform timesteps.
    scheduler_class = LCMScheduler if sampler == "lcm" else DDIMScheduler
    accepted = inspect.signature(scheduler_class.__init__).parameters
    config = {k: v for k, v in scheduler_config.items() if k in accepted}  # other schedulers' keys
    scheduler = scheduler_class.from_config(config)
    scheduler.set_timesteps(steps)
    timesteps = tuple(int(t) for t in scheduler.timesteps)
    cumprod = scheduler.alphas_cumprod.double()
    final = torch.tensor(1.0 if config.get("set_alpha_to_one", False) else float(cumprod[0]), dtype=torch.float64)
    alphas = cumprod[list(timesteps)]
    alphas_prev = torch.cat([cumprod[list(timesteps[1:])], final[None]])
    prediction_type = config.get("prediction_type", "epsilon")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise UserError(f"models predicting {prediction_type!r} are not supported: use an epsilon or v model")
    return Schedule(sampler, timesteps, alphas, alphas_prev, prediction_type)


def split_prediction(x: torch.Tensor, out: torch.Tensor, alpha: torch.Tensor, prediction_type: str):
    """(x0, eps) from a model output, for epsilon and v-prediction models."""
    a, s = alpha.sqrt().to(x.dtype), (1 - alpha).sqrt().to(x.dtype)
    if prediction_type == "v_prediction":
        return a * x - s * out, a * out + s * x
    return (x - s * out) / a, out


def add_noise(x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Forward diffusion q(x_t | x_0) at cumulative alpha ``alpha``."""
    return alpha.sqrt().to(x0.dtype) * x0 + (1 - alpha).sqrt().to(x0.dtype) * noise


def sample_ddim(model: ModelFn, x: torch.Tensor, schedule: Schedule, start: int, stop: int) -> torch.Tensor:
    """DDIM with eta = 0 (Song et al. 2021, eq. 12); matches diffusers' DDIMScheduler."""
    for i in range(start, stop):
        x0, eps = split_prediction(x, model(x, i), schedule.alphas[i], schedule.prediction_type)
        x = add_noise(x0, eps, schedule.alphas_prev[i])
    return x


def sample_lcm(
    model: ModelFn, x: torch.Tensor, schedule: Schedule, noise: torch.Tensor, start: int, stop: int
) -> torch.Tensor:
    """LCM multistep sampling (Luo et al. 2023, alg. 3) with the step noise given: ``noise[i]`` for step i."""
    last = len(schedule) - 1
    for i in range(start, stop):
        x0, _ = split_prediction(x, model(x, i), schedule.alphas[i], schedule.prediction_type)
        c_skip, c_out = lcm_boundary_scalings(schedule.timesteps[i])
        denoised = c_out * x0 + c_skip * x
        x = denoised if i == last else add_noise(denoised, noise[i].to(x.dtype), schedule.alphas_prev[i])
    return x


def lcm_boundary_scalings(timestep: int, sigma_data: float = 0.5, timestep_scaling: float = 10.0):
    """c_skip, c_out of the LCM consistency parameterisation, as in diffusers' LCMScheduler."""
    scaled = timestep * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def sample_plms(
    model: ModelFn,
    x: torch.Tensor,
    schedule: Schedule,
    start: int,
    stop: int,
    history: tuple[torch.Tensor, ...] = (),
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """PLMS as in CompVis ldm's PLMSSampler (Liu et al. 2022), the sampler of the official TPoS code.

    ``history`` holds the last (up to three) model outputs; it is returned so a run can be split at delta.
    The first step, with no history, takes a second model evaluation (pseudo improved Euler).
    """
    for i in range(start, stop):
        eps = _as_eps(x, model(x, i), schedule, i)
        if not history:
            x_next = _ddim_update(x, eps, schedule, i)
            j = min(i + 1, len(schedule) - 1)  # ldm evaluates the last step's second term at the same t
            eps_next = _as_eps(x_next, model(x_next, j), schedule, j)
            eps_prime = (eps + eps_next) / 2
        else:
            eps_prime = _adams_bashforth(eps, history)
        x = _ddim_update(x, eps_prime, schedule, i)
        history = (*history, eps)[-3:]
    return x, history


def _as_eps(x: torch.Tensor, out: torch.Tensor, schedule: Schedule, i: int) -> torch.Tensor:
    return split_prediction(x, out, schedule.alphas[i], schedule.prediction_type)[1]


def _ddim_update(x: torch.Tensor, eps: torch.Tensor, schedule: Schedule, i: int) -> torch.Tensor:
    a = schedule.alphas[i]
    x0 = (x - (1 - a).sqrt().to(x.dtype) * eps) / a.sqrt().to(x.dtype)
    return add_noise(x0, eps, schedule.alphas_prev[i])


def _adams_bashforth(eps: torch.Tensor, history: tuple[torch.Tensor, ...]) -> torch.Tensor:
    if len(history) == 1:
        return (3 * eps - history[-1]) / 2
    if len(history) == 2:
        return (23 * eps - 16 * history[-1] + 5 * history[-2]) / 12
    return (55 * eps - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
