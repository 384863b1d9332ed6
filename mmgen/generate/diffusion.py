"""Diffusion maths as plain functions: the cosine schedule, the training loss, DDIM sampling with guidance.

Continuous time t in [0, 1]; the cosine schedule in its log-SNR form (Kingma et al. 2021,
Hoogeboom et al. 2023): logsnr(t) = -2 log tan(pi t / 2), clipped to [LOGSNR_MIN, LOGSNR_MAX], with
alpha^2 = sigmoid(logsnr) and sigma^2 = sigmoid(-logsnr).

The network's output is read in one of two parameterisations, recorded in a generator's manifest:
- `v`: v = alpha eps - sigma x (Salimans & Ho 2022), the usual choice for long training runs;
- `x0`: the clean picture itself. Early in training its mistakes are blur instead of leftover
  noise (a v-model must cancel the noise in z exactly to leave none), which is what a budget of a
  few thousand CPU steps sees; the CPU preset uses it.
Both are trained on the x0 error weighted by clamp(SNR, 1, gamma): Salimans & Ho's truncated-SNR
weighting (no noise level below weight 1, so the high-noise steps that decide a picture's layout
from the prompt keep their say) capped as in min-SNR-gamma (Hang et al. 2023), so the nearly clean
steps do not dominate.

Sampling can also start from an image noised to an intermediate time instead of from pure noise
(SDEdit); see `ddim_sample`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch

from mmgen.errors import ConfigError

LOGSNR_MIN = -15.0
LOGSNR_MAX = 15.0
MIN_SNR_GAMMA = 5.0
PREDICTIONS = ("v", "x0")

# (noisy images, times) -> a network output or a clean estimate
Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def logsnr(t: torch.Tensor) -> torch.Tensor:
    """Cosine schedule's log signal-to-noise ratio at times `t` in [0, 1]."""
    t_min = math.atan(math.exp(-0.5 * LOGSNR_MAX))
    t_max = math.atan(math.exp(-0.5 * LOGSNR_MIN))
    return -2.0 * torch.log(torch.tan(t_min + t.float() * (t_max - t_min)))


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal and noise scales at times `t` (alpha^2 + sigma^2 = 1)."""
    lam = logsnr(t)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def check_prediction(prediction: str) -> str:
    """The parameterisation name, or ConfigError listing the valid ones."""
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction must be one of {', '.join(PREDICTIONS)}, not {prediction!r}")
    return prediction


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (like.ndim - 1))).to(like.device, like.dtype)


def clean_estimate(out: torch.Tensor, z: torch.Tensor, t: torch.Tensor, prediction: str) -> torch.Tensor:
    """The x0 estimate a network output `out` at noisy `z`, times `t` stands for."""
    if prediction == "x0":
        return out
    alpha, sigma = alpha_sigma(t)
    return _bcast(alpha, z) * z - _bcast(sigma, z) * out


def diffusion_loss(
    model: Predictor,
    x0: torch.Tensor,
    generator: torch.Generator | None = None,
    prediction: str = "v",
) -> torch.Tensor:
    """Loss of `model(noisy, t)` on clean images `x0` in [-1, 1]: clamp(SNR, 1, gamma) * |x0' - x0|^2.

    The error is measured on the clean estimate, whatever the parameterisation; for `v` this equals
    clamp(SNR, 1, gamma) / (SNR + 1) * |v' - v|^2.
    """
    check_prediction(prediction)
    b = x0.shape[0]
    t = torch.rand(b, generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    alpha, sigma = alpha_sigma(t)
    noisy = _bcast(alpha, x0) * x0 + _bcast(sigma, x0) * noise
    out = model(noisy, t).float()
    estimate = clean_estimate(out, noisy.float(), t, prediction)
    snr = torch.exp(logsnr(t)).to(x0.device)
    per_sample = (estimate - x0.float()).pow(2).mean(dim=(1, 2, 3))
    return (torch.clamp(snr, min=1.0, max=MIN_SNR_GAMMA) * per_sample).mean()


def check_strength(strength: float) -> float:
    """An init strength in (0, 1] (the time sampling starts from), else ConfigError."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0.0 < float(strength) <= 1.0:
        raise ConfigError(f"init strength must be in (0, 1] (1: start from pure noise), not {strength!r}")
    return float(strength)


@torch.no_grad()
def ddim_sample(
    denoise: Predictor,
    noise: torch.Tensor,
    steps: int,
    init: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) from time `strength` down to 0, to images in [-1, 1].

    Without `init` (or at strength 1) sampling starts from `noise` itself, pure noise. With `init`
    (images in [-1, 1], shaped like `noise`) and strength t0 < 1 it starts SDEdit-style (Meng et al.
    2022) from init noised to t0, z = alpha(t0) init + sigma(t0) noise, and the `steps` steps are
    spread over [0, t0]: the init's layout survives, detail is redrawn. Strength 1 ignores `init`
    rather than keep its alpha(1) ~ 6e-4 share, so it gives exactly the pure-noise pictures.

    `denoise(z, t)` is the (guided) clean estimate; it is clipped to [-1, 1] at every step and the
    noise estimate recomputed from it, so clipping never leaves the two inconsistent.
    """
    t0 = check_strength(strength)
    if t0 < 1.0 and init is None:
        raise ConfigError(f"init strength {t0:g} < 1 starts from an image: give `init`")
    if t0 < 1.0 and init is not None:
        if init.shape != noise.shape:
            raise ConfigError(f"init {tuple(init.shape)} and noise {tuple(noise.shape)} differ in shape")
        alpha0, sigma0 = (v.to(noise.device) for v in alpha_sigma(torch.tensor([t0])))
        z = alpha0 * init.to(noise.device, noise.dtype) + sigma0 * noise
    else:
        z = noise
    times = torch.linspace(t0, 0.0, steps + 1)
    x0 = z
    for i in range(steps):
        t = times[i]
        alpha, sigma = (v.to(z.device) for v in alpha_sigma(t.view(1)))
        x0 = denoise(z, t.expand(z.shape[0]).to(z.device)).clamp(-1.0, 1.0)
        if i == steps - 1:
            break
        eps = (z - alpha * x0) / sigma
        alpha_n, sigma_n = (v.to(z.device) for v in alpha_sigma(times[i + 1].view(1)))
        z = alpha_n * x0 + sigma_n * eps
    return x0


def guided(
    predict: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor], guidance: float, prediction: str
) -> Predictor:
    """Classifier-free guidance, conditional and unconditional in one batch, as a clean estimate.

    `predict(z, t, keep)` runs the network with conditions kept where `keep` is True. The outputs
    combine as out_u + g (out_c - out_u) before conversion (both parameterisations are affine in
    the output, so this equals guiding the clean estimate); guidance 1 skips the unconditional half.
    """
    check_prediction(prediction)

    def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        if guidance == 1.0:
            out = predict(z, t, torch.ones(b, dtype=torch.bool, device=z.device))
        else:
            keep = torch.cat([torch.ones(b, dtype=torch.bool), torch.zeros(b, dtype=torch.bool)]).to(z.device)
            both = predict(torch.cat([z, z]), torch.cat([t, t]), keep)
            out = both[b:] + guidance * (both[:b] - both[b:])
        return clean_estimate(out, z, t, prediction)

    return denoise


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu()


def from_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0
