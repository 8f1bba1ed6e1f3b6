"""Zero-terminal-SNR rescaling (Lin et al. 2024) against diffusers' rescale_zero_terminal_snr on SD's betas."""

import torch

from atelier.sampling.denoisers import DiscreteSchedule


def test_zero_terminal_snr_matches_diffusers_and_comfyui_last_value():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    sd = DiscreteSchedule.scaled_linear()
    rescaled = sd.zero_terminal_snr()
    reference = torch.cumprod(1.0 - rescale_zero_terminal_snr(sd.betas.clone()), dim=0)  # its last value is 0
    assert torch.allclose(rescaled.alphas_cumprod[:-1], reference[:-1], rtol=1e-9, atol=1e-12)
    assert abs(rescaled.alphas_cumprod[-1].item() - 4.8973451890853435e-08) < 1e-15
    assert abs(rescaled.sigma_max - 4.8973451890853435e-08**-0.5) < 1.0  # ~4519: the last step is all noise
    assert abs(rescaled.sigma_min - sd.sigma_min) < 1e-6  # the first step is untouched
    assert sd.sigma_max < 15.0  # SD's own schedule stops at sigma 14.6
