"""NFSD NeRF to Mesh and NFSD Save Mesh: a NeRF's isosurface as ComfyUI's core MESH, saved with colours.

The mesh node outputs the core MESH (vertices [1, N, 3], faces [1, M, 3]), so core Save GLB and
other 3D nodes take it. Its vertex colours ride on the same object as `vertex_colors` [1, N, 3]
in [0, 1] (see adapters.mesh: newer ComfyUI's MESH has that field, 0.3.6x's Save GLB ignores it).
NFSD Save Mesh writes any core MESH, with its texture (NFSD Texture to Mesh's) or its vertex
colours, as GLB, OBJ (+ MTL and PNG) or PLY under ComfyUI's output folder and returns the path
relative to it: the `model_file` that core Preview 3D takes.
"""

from __future__ import annotations

import os
import posixpath

import comfy.model_management
import folder_paths
from comfy_api.latest import io

from ..nfsd_core import mesh_bytes
from ..nfsd_core.nerf import COLOUR_OUTPUTS, MESH_FORMATS, export_mesh, extract_mesh
from .adapters.mesh import core_mesh, meshes_of
from .guards.limits import check_finite, check_memory, interrupt_progress
from .guards.paths import confined, refusal
from .schema import CATEGORY
from .sockets import Nerf
from .sockets.nerf import check_nerf


def check_mesh_memory(nerf, resolution: int) -> None:
    """Refuse a mesh of `nerf` at `resolution` that cannot fit in memory, naming the resolution that fits."""
    settings = check_nerf(nerf).settings
    check_memory(mesh_bytes(settings, resolution), f"a mesh of resolution {resolution}",
                 {"resolution": (lambda n: mesh_bytes(settings, n), 16, resolution, 8)})


MESH_PREFIX = "NFSD/mesh"
SAVED_NAME_SUFFIX = len("_00001_.glb") + 2  # what Save Mesh appends to the prefix's last name (room for 10^7 files)


class ExtractMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_ExtractMesh",
            display_name="NFSD NeRF to Mesh",
            category=f"{CATEGORY}/3d",
            description="Marching cubes on an optimised NeRF's density, coloured by its colour field, as ComfyUI's "
                        "MESH (y up, front towards +z) for Save GLB, NFSD Save Mesh and other 3D nodes.",
            inputs=[
                Nerf.Input("nerf", tooltip="An optimised NeRF (NFSD Optimizer)."),
                io.Int.Input("resolution", default=128, min=16, max=1024, step=8,
                             tooltip="Density samples per axis of the marching-cubes grid. Time and memory grow with "
                             "its cube: 128 takes seconds on a CPU, 256 to 512 want a GPU (512: about 4 GB). A "
                             "resolution that would not fit in memory is refused, with the one that fits."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=10000.0, step=0.5,
                               tooltip="The density of the surface. 0: automatic (the mean density where there is "
                               "any, threestudio's rule); threestudio's fixed value is 25."),
                io.Float.Input("min_component", default=0.01, min=0.0, max=1.0, step=0.005,
                               tooltip="Drop floating pieces with fewer than this fraction of all faces; 0 keeps "
                               "every piece."),
            ],
            outputs=[io.Mesh.Output(display_name="mesh", tooltip="ComfyUI's MESH, with vertex colours for NFSD Save "
                                    "Mesh (core Save GLB writes the shape only).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def check_before_optimizer(cls, inputs: dict, upstream) -> None:
        """A mesh that cannot fit, refused by an Optimizer upstream before its first step (guards.graph)."""
        if isinstance(inputs.get("resolution"), int):
            check_mesh_memory(upstream.representation, inputs["resolution"])

    @classmethod
    def execute(cls, nerf, resolution, threshold, min_component) -> io.NodeOutput:
        check_finite(cls, {"threshold": threshold, "min_component": min_component})
        check_mesh_memory(nerf, resolution)
        restored = nerf.restore(comfy.model_management.get_torch_device())
        mesh = extract_mesh(restored, resolution=resolution, threshold=threshold or "auto",
                            min_component=min_component, progress=interrupt_progress(1, cls.hidden.unique_id))
        return io.NodeOutput(core_mesh(mesh))


class SaveMesh(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_SaveMesh",
            display_name="NFSD Save Mesh",
            category=f"{CATEGORY}/3d",
            description="Saves a MESH with its texture or vertex colours under ComfyUI's output folder and shows it; "
                        "the path output goes to Preview 3D's model_file.",
            inputs=[
                io.Mesh.Input("mesh", tooltip="A MESH, e.g. from NFSD NeRF to Mesh; vertex colours are kept when it "
                              "has them."),
                io.String.Input("filename_prefix", default=MESH_PREFIX,
                                tooltip="File name prefix, with subfolders, inside ComfyUI's output folder (a "
                                "relative path); a counter is appended as for saved images."),
                io.Combo.Input("format", options=list(MESH_FORMATS), default="glb",
                               tooltip="glb: glTF binary, which Preview 3D and most viewers open. obj and ply: for "
                               "mesh editors."),
                io.Combo.Input("colours", options=list(COLOUR_OUTPUTS), default=COLOUR_OUTPUTS[0], optional=True,
                               tooltip="texture: a textured mesh (NFSD Texture to Mesh) is written with its texture "
                               "image (glb: inside it; obj: beside it as .mtl and .png; ply holds none and gets "
                               "vertex colours). vertex colours: its colours per vertex instead. Meshes without a "
                               "texture always get their vertex colours."),
            ],
            outputs=[io.String.Output(display_name="model_file",
                                      tooltip="The saved file's path relative to the output folder (the first one "
                                      "for a batch), for Preview 3D.")],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, filename_prefix=None) -> bool | str:
        """Refuses, when the graph is queued, a prefix that leads outside the output folder or names
        files the file system would refuse after the work (None: linked, checked when it runs)."""
        if filename_prefix is None:
            return True
        return refusal("filename_prefix", filename_prefix, folder_paths.get_output_directory(), "output",
                       MESH_PREFIX, SAVED_NAME_SUFFIX) or True

    @classmethod
    def execute(cls, mesh, filename_prefix, format, colours=COLOUR_OUTPUTS[0]) -> io.NodeOutput:
        output = folder_paths.get_output_directory()
        confined("filename_prefix", filename_prefix, output, "output", MESH_PREFIX, SAVED_NAME_SUFFIX)
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(filename_prefix, output)
        subfolder = subfolder.replace("\\", "/")
        saved = []
        for index, item in enumerate(meshes_of(mesh)):
            filename = f"{name}_{counter + index:05}_.{format}"
            export_mesh(item, os.path.join(folder, filename), format, colours)
            saved.append({"filename": filename, "subfolder": subfolder, "type": "output"})
        if not saved:
            raise ValueError("the MESH holds no meshes (its batch is empty)")
        return io.NodeOutput(posixpath.join(subfolder, saved[0]["filename"]), ui={"3d": saved})
