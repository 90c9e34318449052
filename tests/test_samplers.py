"""Our stateless samplers against diffusers' schedulers, step for step, with a fixed toy model."""

import pytest
import torch
from diffusers import DDIMScheduler, LCMScheduler

from tpos_live.diffusion.samplers import make_schedule, sample_ddim, sample_lcm, sample_plms
from tpos_live.errors import UserError

SD_SCHEDULER = {
    "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
    "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False, "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}


def toy_model(schedule):
    """A deterministic stand-in for a UNet: depends on the latent and the timestep."""
    def model(x, i):
        return torch.tanh(x * 0.7 + 0.001 * schedule.timesteps[i])
    return model


def test_ddim_matches_diffusers():
    schedule = make_schedule(SD_SCHEDULER, "ddim", 10)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = sample_ddim(toy_model(schedule), x.clone(), schedule, 0, len(schedule))
    reference = DDIMScheduler.from_config(SD_SCHEDULER)
    reference.set_timesteps(10)
    assert [int(t) for t in reference.timesteps] == list(schedule.timesteps)
    y = x.clone()
    for i, t in enumerate(reference.timesteps):
        y = reference.step(toy_model(schedule)(y, i), t, y).prev_sample
    torch.testing.assert_close(ours, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_lcm_matches_diffusers_given_the_same_noise(steps):
    schedule = make_schedule(SD_SCHEDULER, "lcm", steps)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise_generator = torch.Generator().manual_seed(7)
    noise = torch.stack([torch.randn(1, 4, 8, 8, generator=noise_generator) for _ in range(steps)])
    ours = sample_lcm(toy_model(schedule), x.clone(), schedule, noise, 0, steps)
    reference = LCMScheduler.from_config(SD_SCHEDULER)
    reference.set_timesteps(steps)
    generator = torch.Generator().manual_seed(7)  # diffusers draws its step noise from this, in order
    y = x.clone()
    for i, t in enumerate(reference.timesteps):
        y = reference.step(toy_model(schedule)(y, i), t, y, generator=generator).prev_sample
    torch.testing.assert_close(ours, y, rtol=1e-5, atol=1e-5)


def test_split_runs_equal_one_run():
    """Stopping at delta and resuming (what the scene cache does) changes nothing."""
    for sampler in ("ddim", "lcm", "plms"):
        schedule = make_schedule(SD_SCHEDULER, sampler, 8)
        model = toy_model(schedule)
        x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
        noise = torch.randn(8, 1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
        if sampler == "plms":
            whole, _ = sample_plms(model, x, schedule, 0, 8)
            half, history = sample_plms(model, x, schedule, 0, 3)
            split, _ = sample_plms(model, half, schedule, 3, 8, history)
        elif sampler == "lcm":
            whole = sample_lcm(model, x, schedule, noise, 0, 8)
            split = sample_lcm(model, sample_lcm(model, x, schedule, noise, 0, 3), schedule, noise, 3, 8)
        else:
            whole = sample_ddim(model, x, schedule, 0, 8)
            split = sample_ddim(model, sample_ddim(model, x, schedule, 0, 3), schedule, 3, 8)
        torch.testing.assert_close(whole, split)


def test_plms_follows_the_ldm_recurrence():
    """With a constant model output, every PLMS combination reduces to that output: it equals DDIM."""
    schedule = make_schedule(SD_SCHEDULER, "plms", 6)
    constant = torch.full((1, 4, 4, 4), 0.3)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))
    plms, history = sample_plms(lambda x, i: constant, x, schedule, 0, 6)
    ddim = sample_ddim(lambda x, i: constant, x, schedule, 0, 6)
    torch.testing.assert_close(plms, ddim)
    assert len(history) == 3


def test_plms_first_step_evaluates_twice_then_once_per_step():
    schedule = make_schedule(SD_SCHEDULER, "plms", 5)
    calls = []
    sample_plms(lambda x, i: calls.append(i) or torch.zeros_like(x), torch.zeros(1, 4, 4, 4), schedule, 0, 5)
    assert calls == [0, 1, 1, 2, 3, 4]


def test_paper_timesteps_are_the_official_uniform_ones():
    schedule = make_schedule(SD_SCHEDULER, "plms", 50)
    assert schedule.timesteps[0] == 981 and schedule.timesteps[-1] == 1
    assert schedule.first_step_below(900) == 5  # official param_t 900: guided from t = 881


def test_bad_sampler_and_steps_are_user_errors():
    with pytest.raises(UserError, match="unknown sampler"):
        make_schedule(SD_SCHEDULER, "euler", 4)
    with pytest.raises(UserError, match="at least 1"):
        make_schedule(SD_SCHEDULER, "ddim", 0)
