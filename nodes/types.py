"""The pack's own socket types. Their names carry the NFSD_ prefix so no other pack's types clash."""

from comfy_api.latest import io

CATEGORY = "NFSD"

Guidance = io.Custom("NFSD_GUIDANCE")
"""An nfsd_core ScoreDistillation whose score model is a ComfyScoreModel."""

Representation = io.Custom("NFSD_REPRESENTATION")
"""A NodeRepresentation (see representation.py), such as a latent canvas."""
