"""Prompts on two topics whose right model is obvious: math questions and requests for poems."""

import numpy as np

from crossroads.data.dataset import ModelInfo, RoutingDataset

MATH = ["What is 17 times 23?", "Solve for x: 3x + 5 = 20.", "What is the square root of 144?",
        "Compute 15% of 240.", "How many minutes are in 7.5 hours?", "What is 2 to the power of 10?",
        "Divide 1,001 by 7.", "What is the derivative of x squared?"]
POETRY = ["Write a haiku about autumn leaves.", "Compose a short poem about the sea.",
          "Write a limerick about a cat.", "Give me a sonnet about lost love.", "A poem about the moon, please.",
          "Write verses about a quiet morning.", "Compose a rhyme about rain.", "Write an ode to coffee."]


def topics_dataset(models: list[ModelInfo]) -> RoutingDataset:
    """MATH and POETRY as a dataset: the first model answers math perfectly, the second poems; nothing else."""
    prompts = MATH + POETRY
    quality = np.zeros((len(prompts), len(models)))
    quality[: len(MATH), 0] = 1.0
    quality[len(MATH):, 1] = 1.0
    return RoutingDataset(query_ids=[f"q{i}" for i in range(len(prompts))], prompts=prompts,
                          categories=["math"] * len(MATH) + ["poetry"] * len(POETRY), sources=["test"] * len(prompts),
                          models=models, quality=quality, cost_usd=np.full((len(prompts), len(models)), 1e-3))
