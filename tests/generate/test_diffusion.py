"""Diffusion maths and the denoising network: schedule identities, exact sampling with an oracle, guidance, shapes,
starting from a noised image (init strength)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from mmgen.errors import ConfigError
from mmgen.generate.diffusion import (
    LOGSNR_MAX,
    LOGSNR_MIN,
    PREDICTIONS,
    alpha_sigma,
    check_strength,
    ddim_sample,
    diffusion_loss,
    from_uint8,
    guided,
    logsnr,
    to_uint8,
)
from mmgen.generate.unet import ConditionalUNet, Conditions, UNetConfig, parameter_count


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Tiny tensors on a shared 2-core machine: one thread avoids OpenMP spin contention (10x faster here).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


TINY = UNetConfig(image_size=16, channels=(16, 32), attention=(1,), heads=2, cond_dim=8, neighbours=3)


def test_schedule_is_a_variance_preserving_cosine() -> None:
    t = torch.linspace(0, 1, 101)
    alpha, sigma = alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    lam = logsnr(t)
    assert torch.all(lam[1:] < lam[:-1])  # strictly more noise as t grows
    assert lam[0].item() == pytest.approx(LOGSNR_MAX, abs=1e-3) and lam[-1].item() == pytest.approx(LOGSNR_MIN, abs=1e-3)
    # the interior is the plain cosine schedule: alpha = cos(pi t' / 2) for the rescaled time t'
    mid = torch.tensor([0.5])
    assert logsnr(mid).item() == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_ddim_with_an_oracle_recovers_the_single_training_image(prediction: str) -> None:
    """For data that is one point x*, the ideal output is known in closed form; DDIM must land on x*."""
    gen = torch.Generator().manual_seed(0)
    target = torch.rand((2, 3, 8, 8), generator=gen) * 2 - 1

    def oracle(z: torch.Tensor, t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if prediction == "x0":
            return target.repeat(z.shape[0] // 2, 1, 1, 1)
        alpha, sigma = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        x = target.repeat(z.shape[0] // 2, 1, 1, 1)
        eps = (z - alpha * x) / sigma
        return alpha * eps - sigma * x

    for guidance in (1.0, 4.0):  # both halves agree, so guidance must change nothing
        out = ddim_sample(guided(oracle, guidance, prediction), torch.randn((2, 3, 8, 8), generator=gen), steps=5)
        torch.testing.assert_close(out, target, atol=1e-4, rtol=0)


def test_guidance_extrapolates_from_the_unconditional_prediction() -> None:
    def predict(z: torch.Tensor, t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        # conditional: 2, unconditional: 0.5 (per sample)
        return torch.where(keep.view(-1, 1, 1, 1), torch.full_like(z, 2.0), torch.full_like(z, 0.5))

    z, t = torch.zeros((3, 3, 4, 4)), torch.full((3,), 0.5)
    assert torch.all(guided(predict, 1.0, "x0")(z, t) == 2.0)
    assert torch.allclose(guided(predict, 3.0, "x0")(z, t), torch.full_like(z, 0.5 + 3.0 * 1.5))
    assert torch.allclose(guided(predict, 0.0, "x0")(z, t), torch.full_like(z, 0.5))
    # v outputs become clean estimates: x0 = alpha z - sigma v (z = 0 here)
    _, sigma = alpha_sigma(t[:1])
    assert torch.allclose(guided(predict, 1.0, "v")(z, t), torch.full_like(z, -2.0 * float(sigma)))
    with pytest.raises(ConfigError, match="prediction"):
        guided(predict, 1.0, "eps")


@pytest.mark.parametrize("prediction", ["v", "x0"])
def test_loss_is_zero_for_the_exact_predictor_and_positive_otherwise(prediction: str) -> None:
    x0 = torch.zeros((4, 3, 8, 8))  # then v = (alpha / sigma) * noisy and the clean picture is 0, exactly

    def exact(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if prediction == "x0":
            return torch.zeros_like(noisy)
        alpha, sigma = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        return alpha / sigma * noisy

    gen = torch.Generator().manual_seed(1)
    assert diffusion_loss(exact, x0, gen, prediction).item() == pytest.approx(0.0, abs=1e-6)
    wrong = diffusion_loss(lambda z, t: torch.ones_like(z), x0, torch.Generator().manual_seed(1), prediction)
    assert wrong.item() > 0.01


def test_v_and_x0_losses_weigh_the_clean_error_alike() -> None:
    """A v output and the x0 output that stand for the same clean estimate get the same loss."""
    x0 = torch.rand((4, 3, 8, 8)) * 2 - 1
    guess = torch.rand((4, 3, 8, 8)) * 2 - 1

    def as_x0(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guess

    def as_v(noisy: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        alpha, sigma = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        return (alpha * noisy - guess) / sigma  # so that alpha z - sigma v = guess

    a = diffusion_loss(as_x0, x0, torch.Generator().manual_seed(2), "x0")
    b = diffusion_loss(as_v, x0, torch.Generator().manual_seed(2), "v")
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_uint8_round_trip() -> None:
    pixels = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    assert torch.equal(to_uint8(from_uint8(pixels)), pixels)


def test_unet_shapes_and_dropped_conditions() -> None:
    torch.manual_seed(0)
    net = ConditionalUNet(TINY).eval()
    # zero-initialised output layers make a fresh net predict 0: perturb them so conditions show
    for p in net.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    text_a, text_b = torch.randn(2, 8), torch.randn(2, 8)
    neigh = torch.randn(2, 3, 8)
    with torch.no_grad():
        out = net(x, t, Conditions(text_a, neigh))
        assert out.shape == x.shape
        assert not torch.allclose(out, net(x, t, Conditions(text_b, neigh)))
        dropped = torch.zeros(2, dtype=torch.bool)
        a = net(x, t, Conditions(text_a, neigh, dropped, dropped))
        b = net(x, t, Conditions(text_b, torch.randn(2, 3, 8), dropped, dropped))
        torch.testing.assert_close(a, b)  # all conditions dropped: the inputs no longer matter
        # attention and the mean pool take any number of neighbours
        assert net(x, t, Conditions(text_a, torch.randn(2, 7, 8))).shape == x.shape
    with pytest.raises(ConfigError, match="neighbours"):
        net(x, t, Conditions(text_a, None))
    with pytest.raises(ConfigError, match="neighbours"):
        net(x, t, Conditions(text_a, torch.randn(2, 3, 5)))
    assert 0 < parameter_count(net) < 500_000


def test_text_only_unet_and_config_checks() -> None:
    net = ConditionalUNet(UNetConfig(**{**TINY.to_json(), "channels": (16, 32), "attention": (1,), "neighbours": 0}))
    assert net(torch.randn(1, 3, 16, 16), torch.rand(1), Conditions(torch.randn(1, 8))).shape == (1, 3, 16, 16)
    with pytest.raises(ConfigError, match="divisible"):
        UNetConfig(image_size=18, channels=(16, 32)).check()
    with pytest.raises(ConfigError, match="attention"):
        UNetConfig(channels=(16, 32), attention=(3,)).check()
    with pytest.raises(ConfigError, match="unknown UNet settings"):
        UNetConfig.from_json({"channels": [16, 32], "attention": [1], "depth": 3})
    assert UNetConfig.from_json(TINY.to_json()) == TINY


# ---- starting from an image (init strength, SDEdit) ---------------------------------------------
def _pure_noise_ddim(denoise: Any, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The sampler as it was before init strengths existed, kept as the oracle for strength 1."""
    z, times, x0 = noise, torch.linspace(1.0, 0.0, steps + 1), noise
    for i in range(steps):
        alpha, sigma = alpha_sigma(times[i].view(1))
        x0 = denoise(z, times[i].expand(z.shape[0])).clamp(-1.0, 1.0)
        if i == steps - 1:
            break
        alpha_n, sigma_n = alpha_sigma(times[i + 1].view(1))
        z = alpha_n * x0 + sigma_n * ((z - alpha * x0) / sigma)
    return x0


def test_strength_one_is_the_pure_noise_sampler_bit_for_bit() -> None:
    torch.manual_seed(0)
    net = ConditionalUNet(TINY).eval()
    for p in net.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    text, neigh = torch.randn(2, 8), torch.randn(2, 3, 8)

    def predict(z: torch.Tensor, t: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        r = z.shape[0] // 2
        return net(z, t, Conditions(text.repeat(r, 1), neigh.repeat(r, 1, 1), keep, keep))

    gen = torch.Generator().manual_seed(3)
    noise, init = torch.randn((2, 3, 16, 16), generator=gen), torch.rand((2, 3, 16, 16), generator=gen) * 2 - 1
    for prediction in PREDICTIONS:
        denoise = guided(predict, 3.0, prediction)
        with torch.no_grad():
            expected = _pure_noise_ddim(denoise, noise, 4)
        assert torch.equal(ddim_sample(denoise, noise, 4), expected)
        assert torch.equal(ddim_sample(denoise, noise, 4, init, 1.0), expected)  # init ignored at strength 1
        assert not torch.equal(ddim_sample(denoise, noise, 4, init, 0.5), expected)


def test_init_is_noised_with_the_schedule_and_the_steps_span_zero_to_t0() -> None:
    gen = torch.Generator().manual_seed(4)
    noise, init = torch.randn((2, 3, 8, 8), generator=gen), torch.rand((2, 3, 8, 8), generator=gen) * 2 - 1
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def record(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append((z.clone(), t.clone()))
        return torch.zeros_like(z)

    ddim_sample(record, noise, 4, init, 0.6)
    alpha, sigma = alpha_sigma(torch.tensor([0.6]))
    torch.testing.assert_close(seen[0][0], alpha * init + sigma * noise, rtol=0, atol=0)
    assert [float(t[0]) for _, t in seen] == pytest.approx([0.6, 0.45, 0.3, 0.15])
    assert all(t.shape == (2,) for _, t in seen)


def test_lower_strength_keeps_more_of_the_init_with_the_ideal_gaussian_denoiser() -> None:
    """For data ~ N(0, I) the ideal clean estimate is alpha(t) z: the start decides the picture."""
    gen = torch.Generator().manual_seed(5)
    noise, init = torch.randn((4, 3, 8, 8), generator=gen), torch.randn((4, 3, 8, 8), generator=gen).clamp(-1, 1)

    def ideal(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return alpha_sigma(t)[0].view(-1, 1, 1, 1) * z

    mse = [float((ddim_sample(ideal, noise, 10, init, s) - init).pow(2).mean()) for s in (0.1, 0.4, 0.7, 1.0)]
    assert mse == sorted(mse) and mse[0] < 0.05 < mse[-1]


def test_invalid_strengths_and_missing_init_are_refused() -> None:
    noise = torch.zeros((1, 3, 8, 8))
    for bad in (0.0, -0.5, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match=r"init strength must be in \(0, 1\]"):
            check_strength(bad)  # type: ignore[arg-type]
    assert check_strength(1) == 1.0 and check_strength(0.25) == 0.25
    with pytest.raises(ConfigError, match="give `init`"):
        ddim_sample(lambda z, t: z, noise, 2, None, 0.5)
    with pytest.raises(ConfigError, match="differ in shape"):
        ddim_sample(lambda z, t: z, noise, 2, torch.zeros((1, 3, 4, 4)), 0.5)
