"""NFSD Texture to Mesh: an optimised mesh texture baked into a textured core MESH, with its texture
image and a turntable; and NFSD Demo Mesh: the shapes prior's objects as untextured meshes.

The MESH keeps the vertices it came with (y up), cut along the UV seams, and carries `uvs`,
`texture` and `vertex_colors` (see adapters.mesh), which NFSD Save Mesh writes as a GLB with its
texture (or OBJ + MTL + PNG) for Preview 3D.
"""

from __future__ import annotations

import comfy.model_management
from comfy_api.latest import io

from ..nfsd_core import SHAPE_OBJECTS, object_mesh
from ..nfsd_core.nerf import Mesh, z_up_to_y_up
from ..nfsd_core.texture import UNWRAPS, bake_texture
from .adapters.mesh import core_mesh
from .guards.limits import check_memory, interrupt_progress
from .schema import CATEGORY
from .sockets import Texture
from .sockets.texture import TextureState, check_texture


def check_outputs_memory(state: TextureState, texture_size: int, views: int, view_size: int) -> None:
    """Refuse a bake or a turntable of `state` that cannot fit in memory, naming the value that fits."""
    check_memory(state.bake_bytes(texture_size), f"baking a {texture_size} px texture",
                 {"texture_size": (state.bake_bytes, 64, texture_size, 64)})
    state.check_turntable(views, view_size)


class TextureToMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_TextureToMesh",
            display_name="NFSD Texture to Mesh",
            category=f"{CATEGORY}/3d",
            description="Bakes an optimised mesh texture into a UV texture image on the mesh (every face covered, "
                        "gutters filled) and renders a turntable; the MESH goes to NFSD Save Mesh (GLB with its "
                        "texture, or OBJ + MTL + PNG) and Preview 3D.",
            inputs=[
                Texture.Input("texture", tooltip="An optimised mesh texture (NFSD Optimizer)."),
                io.Int.Input("texture_size", default=1024, min=64, max=8192, step=64,
                             tooltip="Side of the square texture image, in pixels."),
                io.Combo.Input("unwrap", options=list(UNWRAPS), default=UNWRAPS[0],
                               tooltip="How the mesh is laid out on the image. xatlas: charts that follow the surface "
                               "(pip install xatlas). per_face: every pair of triangles in its own cell (nothing to "
                               "install; coarser). auto: xatlas when installed, per_face above 300k faces (xatlas "
                               "takes minutes there on a CPU)."),
                io.Int.Input("views", default=24, min=1, max=360,
                             tooltip="Frames of the turntable, turning once around from the front."),
                io.Int.Input("view_size", default=256, min=8, max=2048, step=8,
                             tooltip="Side of the turntable frames, in pixels."),
            ],
            outputs=[
                io.Mesh.Output(display_name="mesh", tooltip="The textured MESH (y up, as it came), for NFSD Save "
                               "Mesh."),
                io.Image.Output(display_name="texture", tooltip="The baked texture image."),
                io.Image.Output(display_name="turntable", tooltip="The textured mesh from cameras turning once "
                                "around it, over the evaluation background."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def check_before_optimizer(cls, inputs: dict, upstream) -> None:
        """A bake or views that cannot fit, refused by an Optimizer upstream before its first step (guards.graph)."""
        sizes = [inputs.get(name) for name in ("texture_size", "views", "view_size")]
        if all(isinstance(size, int) for size in sizes):
            check_outputs_memory(check_texture(upstream.representation), *sizes)

    @classmethod
    def execute(cls, texture, texture_size, unwrap, views, view_size) -> io.NodeOutput:
        state = check_texture(texture)
        check_outputs_memory(state, texture_size, views, view_size)
        turntable = state.turntable(views, view_size, node_id=cls.hidden.unique_id)
        restored = state.restore(comfy.model_management.get_torch_device())
        mesh = bake_texture(restored, state.vertices, texture_size, unwrap,
                            progress=interrupt_progress(4, cls.hidden.unique_id))
        return io.NodeOutput(core_mesh(mesh), mesh.texture[None], turntable.colour)


class DemoMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_DemoMesh",
            display_name="NFSD Demo Mesh",
            category=f"{CATEGORY}/3d",
            description="One of the objects NFSD Demo Model's shapes prior knows, as an untextured MESH (marching "
                        "cubes of its shape; y up, front towards +z): a mesh to texture without a download.",
            inputs=[
                io.Combo.Input("object", options=list(SHAPE_OBJECTS), default="mug",
                               tooltip="The object. The mug's handle points to its right (+x seen from the front), "
                               "the house's door faces the front."),
                io.Int.Input("resolution", default=64, min=16, max=256, step=8,
                             tooltip="Marching-cubes grid per axis: the mesh's detail (64: about 13k faces)."),
            ],
            outputs=[io.Mesh.Output(display_name="mesh", tooltip="The untextured MESH, for NFSD Mesh Texture.")],
        )

    @classmethod
    def execute(cls, object, resolution) -> io.NodeOutput:
        vertices, faces = object_mesh(object, resolution)
        return io.NodeOutput(core_mesh(Mesh(z_up_to_y_up(vertices), faces)))
