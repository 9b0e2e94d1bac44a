"""Text to NeRF: an implicit volume in plain PyTorch, rendered for score distillation.

- `hashgrid`, `field`: the multiresolution hash grid and the density/colour field;
- `background`, `cameras`, `rays`, `occupancy`, `rendering`, `acceleration`: how it is seen
  (nerfacc's kernels where they run without compiling anything, plain torch elsewhere);
- `regularizers`, `settings`, `representation`: the `Representation` that `optimize` drives;
- `turntable`, `mesh`: previews and mesh export (latent colours to RGB: `nfsd_core.preview`).
"""

from .acceleration import nerfacc_extension_available
from .background import BACKGROUND_KINDS, BackgroundSettings
from .cameras import (CameraSettings, Cameras, make_cameras, orbit_cameras, sample_cameras, training_views,
                      view_names)
from .field import ImplicitVolume, VolumeSettings
from .hashgrid import HashGrid
from .mesh import COLOUR_OUTPUTS, MESH_FORMATS, Mesh, export_mesh, extract_mesh, z_up_to_y_up
from .occupancy import OccupancySettings
from .regularizers import Ramp, RegularizerSettings
from .representation import NerfRepresentation, Render
from .settings import COLOUR_SPACES, LearningRateScales, NerfSettings
from .turntable import queried_share, render_turntable

__all__ = [
    "BACKGROUND_KINDS",
    "COLOUR_OUTPUTS",
    "COLOUR_SPACES",
    "MESH_FORMATS",
    "BackgroundSettings",
    "CameraSettings",
    "Cameras",
    "HashGrid",
    "ImplicitVolume",
    "LearningRateScales",
    "Mesh",
    "NerfRepresentation",
    "NerfSettings",
    "OccupancySettings",
    "Ramp",
    "RegularizerSettings",
    "Render",
    "VolumeSettings",
    "export_mesh",
    "extract_mesh",
    "make_cameras",
    "nerfacc_extension_available",
    "orbit_cameras",
    "queried_share",
    "render_turntable",
    "sample_cameras",
    "training_views",
    "view_names",
    "z_up_to_y_up",
]
