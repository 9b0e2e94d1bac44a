"""Texturing a fixed mesh with score distillation: a third representation beside the latent canvas
and the NeRF, driven by the same `optimize` and guidance.

- `surface`: the mesh, checked and placed for the cameras (glTF's y up -> the renderer's z up);
- `visibility`: which triangle each pixel sees (a plain-PyTorch rasteriser, or Embree);
- `field`, `settings`, `representation`: the colour field on the surface and the `Representation`;
- `bake`: the field baked into a UV texture image (xatlas or per-face charts) and vertex colours.
Turntables come from `nfsd_core.nerf.render_turntable`, which renders either representation.
"""

from .bake import UNWRAPS, bake_texture, resolve_unwrap, unwrap_mesh, xatlas_available
from .representation import TextureRepresentation, check_cameras
from .settings import SHADINGS, ColourFieldSettings, TextureSettings
from .surface import FRONTS, MAX_FACES, MESH_FILE_SUFFIXES, Surface, check_mesh, load_mesh_file
from .visibility import VISIBILITY_BACKENDS, Hits, Visibility, embree_available, rasterize

__all__ = [
    "FRONTS",
    "MAX_FACES",
    "MESH_FILE_SUFFIXES",
    "SHADINGS",
    "UNWRAPS",
    "VISIBILITY_BACKENDS",
    "ColourFieldSettings",
    "Hits",
    "Surface",
    "TextureRepresentation",
    "TextureSettings",
    "Visibility",
    "bake_texture",
    "check_cameras",
    "check_mesh",
    "embree_available",
    "load_mesh_file",
    "rasterize",
    "resolve_unwrap",
    "unwrap_mesh",
    "xatlas_available",
]
