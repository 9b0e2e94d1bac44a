"""ComfyUI's objects as nfsd_core's interfaces, and back. Nothing here is a node.

- `score_model`: a ComfyUI MODEL as an nfsd_core ScoreModel (one batched call per step);
- `codec`: a ComfyUI VAE as a LatentCodec, with gradients through its encoder;
- `autograd`: gradients inside ComfyUI, which runs nodes in inference mode;
- `conditioning`: CONDITIONING as Prompts (empty, negative and view-tagged prompts);
- `fingerprint`: what identifies a MODEL for resuming a run;
- `diffusers_sd`: a diffusers SD directory as ComfyUI's own MODEL, CLIP and VAE (the demo models);
- `preview`: latent preview factors <-> LatentToRGB, and the Optimizer's previewer;
- `mesh`: ComfyUI's core MESH <-> nfsd_core's Mesh (colours, UVs and texture where MESH takes them).
"""
