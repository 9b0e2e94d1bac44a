"""The ComfyUI nodes of the NFSD pack (V3 API). Only ComfyUI imports this package."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .canvas import LatentCanvas
from .decomposition import ScoreDecomposition
from .demo_image import DemoImage
from .demo_model import DemoModel
from .guidance import ScoreDistillationGuidance
from .mesh import ExtractMesh, SaveMesh
from .nerf import NeRFRepresentation
from .optimizer import Optimizer
from .renderer import Renderer
from .texture import MeshTexture
from .texture_mesh import DemoMesh, TextureToMesh
from .turntable import NeRFTurntable
from .view_prompts import ViewPrompts

NODES: list[type[io.ComfyNode]] = [DemoModel, DemoImage, ScoreDistillationGuidance, ViewPrompts, LatentCanvas,
                                   NeRFRepresentation, Optimizer, Renderer, NeRFTurntable, ExtractMesh, SaveMesh,
                                   ScoreDecomposition, MeshTexture, TextureToMesh, DemoMesh]


class NFSDExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
