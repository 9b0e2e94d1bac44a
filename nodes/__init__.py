"""The ComfyUI nodes of the NFSD pack (V3 API). Only ComfyUI imports this package."""

from typing_extensions import override

from comfy_api.latest import ComfyExtension, io

from .canvas import LatentCanvas
from .decomposition import ScoreDecomposition
from .guidance import ScoreDistillationGuidance
from .optimizer import Optimizer
from .renderer import Renderer

NODES: list[type[io.ComfyNode]] = [ScoreDistillationGuidance, LatentCanvas, Optimizer, Renderer, ScoreDecomposition]


class NFSDExtension(ComfyExtension):
    @override
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
