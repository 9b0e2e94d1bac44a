"""What travels between the pack's nodes: the socket types, and the values they carry.

- `representation`: `NodeRepresentation`, an immutable description of something to optimise;
- `canvas`: `CanvasState`, a latent canvas (NFSD_CANVAS sockets);
- `nerf`: `NerfState`, a NeRF (NFSD_NERF sockets);
- `texture`: `TextureState`, a texture on a fixed mesh (NFSD_TEXTURE sockets);
- `rendered`: what the NeRF's and the texture's values share.
The type names carry the NFSD_ prefix so no other pack's types clash.
"""

from comfy_api.latest import io

Guidance = io.Custom("NFSD_GUIDANCE")
"""An nfsd_core ScoreDistillation whose score model is a ComfyScoreModel."""

Canvas = io.Custom("NFSD_CANVAS")
"""A latent canvas (canvas.CanvasState)."""

Nerf = io.Custom("NFSD_NERF")
"""A NeRF (nerf.NerfState)."""

Texture = io.Custom("NFSD_TEXTURE")
"""A texture on a fixed mesh (texture.TextureState)."""

Representation = io.Custom(f"{Canvas.io_type},{Nerf.io_type},{Texture.io_type}")
"""Any NodeRepresentation: ComfyUI's validation accepts a canvas, a NeRF or a mesh texture on a socket
of this comma-separated type, and a socket of this type on any of their inputs (any overlap of the
lists). So the Optimizer, which returns what it was given, checks before its first step that the
inputs its output reaches take that kind (`guards.graph.check_consumers`)."""
