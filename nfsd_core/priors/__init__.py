"""How the project builds its miniature Stable Diffusion priors (digits, and any other):

- `architecture`: `MiniatureSD`, the sizes of a miniature SD, and builders of its networks;
- `tokenizer`: a CLIP tokenizer learnt on a prior's own caption words (or plain bytes);
- `training`: the seeded two-stage training (VAE, then text encoder and UNet) on `PriorData`.
Building a prior needs diffusers and transformers; `import nfsd_core` imports none of this.
"""
