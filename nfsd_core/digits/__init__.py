"""A miniature Stable Diffusion trained on scikit-learn's handwritten digits, and its benchmark.

- `prior`: the shipped weights (`load_digits_prior`), loaded by the diffusers backend; the only
  module `import nfsd_core` loads from here;
- `prompts`, `tokenizer`, `models`: captions, the project's own CLIP tokenizer, the networks;
- `data`, `training`: the digits as images, and the seeded two-stage training;
- `evaluator`, `metrics`, `comparison`: the benchmark's judge, its metrics, same-seed comparisons.
Running the shipped prior needs diffusers and transformers only; training needs scikit-learn.
Import the module you need: this package imports none of them, so loading the prior never
loads the training or benchmark code.
"""
