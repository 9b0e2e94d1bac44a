"""ScoreDistillation.with_seed: the copy the Optimizer node runs with its own seed."""

import torch

from nfsd_core import Prompts, ScoreDistillation

from core_helpers import gaussian_model


def test_with_seed_draws_like_a_guidance_built_with_that_seed_and_leaves_the_original_alone():
    model = gaussian_model({"cat": 1.0, "": 0.0, "ugly": -1.0}, std=0.5)
    prompts = Prompts.from_text(model, "cat", negative_prompt="ugly")
    original = ScoreDistillation(model, prompts, "nfsd", seed=0)
    reseeded = original.with_seed(7)
    built = ScoreDistillation(model, prompts, "nfsd", seed=7)
    for step in range(3):
        t_a, noise_a = reseeded.draw(step, 10, (2, 4, 4, 4))
        t_b, noise_b = built.draw(step, 10, (2, 4, 4, 4))
        assert torch.equal(t_a, t_b) and torch.equal(noise_a, noise_b)
    assert original.noise_stream.seed == 0
    assert not torch.equal(original.draw(0, 10, (2, 4, 4, 4))[1], reseeded.draw(0, 10, (2, 4, 4, 4))[1])
    assert reseeded.model is original.model and reseeded.prompts is original.prompts
    assert (reseeded.rule, reseeded.scale, reseeded.timesteps) == (original.rule, original.scale, original.timesteps)
