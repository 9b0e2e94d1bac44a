"""NFSD Mesh Texture: a fixed mesh (a core MESH, or a file from ComfyUI's input/3d folder) and
texture settings -> a mesh texture (sockets.texture.TextureState) for NFSD Optimizer.

The mesh is checked (empty, NaN vertices, face indices out of range, too many faces) and the
training step's memory estimated before anything is built; the file name is confined to the input
folder like every path a graph sets. As for the NeRF, `guidance_size` 0 and the pixels per latent
are the model's own, filled in by NFSD Optimizer (see sockets.rendered).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import folder_paths
from comfy_api.latest import io

from ..nfsd_core import setting_bounds, texture_training_bytes
from ..nfsd_core.nerf import BACKGROUND_KINDS, COLOUR_SPACES
from ..nfsd_core.texture import (FRONTS, MESH_FILE_SUFFIXES, SHADINGS, TextureSettings, check_cameras, check_mesh,
                                 load_mesh_file)
from .adapters.mesh import meshes_of
from .guards.limits import check_finite, check_memory, validation
from .guards.paths import confined, refusal
from .nerf import MODELS_OWN_SIZE, parse_advanced, settings_from_model, settings_with_advanced
from .schema import CATEGORY, SEED_CONTROL
from .sockets import Texture
from .sockets.texture import TextureState

DEFAULTS = TextureSettings()
MESH_FOLDER = "3d"  # the input subfolder Load 3D uploads to
NO_FILE = "none"
MESH_FILE_EXAMPLE = f"{MESH_FOLDER}/my_mesh.glb"
EXISTING_FILE = 0  # guards.paths' file_suffix for a file read as named: its last name is a file's, nothing appended
GUIDANCE_SIZES, BATCH_SIZES, CAMERA_BANKS = (setting_bounds(TextureSettings, name)
                                            for name in ("guidance_size", "batch_size", "camera_bank"))
ADVANCED_EXAMPLE = '{"cameras": {"elevation_range": [-10, 60]}, "colour_field": {"log2_table_size": 17}}'


def mesh_files() -> list[str]:
    """Mesh files under ComfyUI's input/3d folder, as paths relative to the input folder (as Load 3D lists them)."""
    root = Path(folder_paths.get_input_directory())
    folder = root / MESH_FOLDER
    if not folder.is_dir():
        return []
    return sorted(path.relative_to(root).as_posix() for path in folder.rglob("*")
                  if path.suffix.lower() in MESH_FILE_SUFFIXES and path.is_file())


def read_mesh(mesh, mesh_file: str):
    """(vertices, faces, colours) of the MESH input or the mesh file (exactly one of them)."""
    if mesh is not None and mesh_file != NO_FILE:
        raise ValueError(f"give the mesh either on the 'mesh' input or as mesh_file, not both: set mesh_file to "
                         f"{NO_FILE!r} or unwire 'mesh'")
    if mesh is None:
        if mesh_file == NO_FILE:
            raise ValueError(f"no mesh: wire a MESH into 'mesh' (e.g. from VoxelToMesh or NFSD NeRF to Mesh), or put a "
                             f"mesh file into ComfyUI's input/{MESH_FOLDER} folder and choose it as mesh_file")
        path = confined("mesh_file", mesh_file, folder_paths.get_input_directory(), "input", MESH_FILE_EXAMPLE,
                        EXISTING_FILE)
        return load_mesh_file(path)
    if getattr(mesh, "vertices", None) is None or getattr(mesh, "faces", None) is None:
        raise ValueError("mesh must be a ComfyUI MESH (vertices and faces)")
    if mesh.vertices.dim() != 3 or mesh.faces.dim() != 3 or mesh.vertices.shape[0] != 1 or mesh.faces.shape[0] != 1:
        raise ValueError(f"mesh must be a batch of one mesh (vertices [1, N, 3], faces [1, F, 3]), got "
                         f"{list(mesh.vertices.shape)} and {list(mesh.faces.shape)}: texture one mesh at a time")
    check_mesh(mesh.vertices[0], mesh.faces[0], what="mesh")  # before anything of its size is converted
    (item,) = meshes_of(mesh)
    return check_mesh(item.vertices, item.faces, item.colours, what="mesh")


def parse_texture_advanced(text: str) -> dict[str, Any]:
    """The `advanced` input: "" or a JSON object of TextureSettings overrides (see nerf.parse_advanced)."""
    return parse_advanced(text, "mesh texture settings", ADVANCED_EXAMPLE)


def texture_settings(widgets: Mapping[str, Any]) -> TextureSettings:
    """TextureSettings from the node's widgets; `advanced` (JSON) overrides any setting last."""
    config = DEFAULTS.to_config()
    passed_through = ("colour", "render_size", "guidance_size", "batch_size", "shading", "front", "fit_radius",
                      "camera_bank", "seed")
    config.update({name: widgets[name] for name in passed_through})
    config["background"]["kind"] = widgets["background"]
    return settings_with_advanced(TextureSettings, config, widgets, parse_texture_advanced(widgets.get("advanced", "")),
                                  "mesh texture")


def check_training_memory(state: TextureState) -> None:
    """Refuse a texture whose training step alone cannot fit, naming the render size, batch size and
    camera bank that would."""
    settings = state.settings

    def with_values(**values) -> int:
        changed = dataclasses.replace(settings, **values)
        return texture_training_bytes(changed, len(state.faces), len(state.vertices))

    check_memory(with_values(),
                 f"a mesh texture training step ({settings.batch_size} x {settings.render_size} px renders of a mesh "
                 f"of {len(state.faces)} faces, a camera bank of {settings.camera_bank})", {
                     "render_size": (lambda n: with_values(render_size=n), 8, settings.render_size, 8),
                     "batch_size": (lambda n: with_values(batch_size=n), 1, settings.batch_size, 1),
                     "camera_bank": (lambda n: with_values(camera_bank=n), 0, settings.camera_bank, 1),
                 })


class MeshTexture(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="NFSD_MeshTexture",
            display_name="NFSD Mesh Texture",
            category=f"{CATEGORY}/representations",
            description="A texture on a fixed mesh (a colour field on its surface) for NFSD Optimizer to paint from "
                        "text with your checkpoint; NFSD Texture to Mesh bakes it into a textured GLB. The mesh comes "
                        "on 'mesh' (Hunyuan3D's VoxelToMesh, NFSD NeRF to Mesh) or from ComfyUI's input/3d folder.",
            inputs=[
                io.Mesh.Input("mesh", optional=True,
                              tooltip="A MESH to texture (one mesh, y up as glTF); its vertex colours, if any, are "
                              "the start. Or leave it unwired and choose mesh_file."),
                io.Combo.Input("mesh_file", options=[NO_FILE, *mesh_files()], default=NO_FILE,
                               tooltip=f"A mesh file in ComfyUI's input/{MESH_FOLDER} folder (where Load 3D uploads): "
                               f"{', '.join(MESH_FILE_SUFFIXES)}. Its texture or vertex colours are the start. "
                               f"'{NO_FILE}': use the 'mesh' input."),
                io.Combo.Input("colour", options=list(COLOUR_SPACES), default=DEFAULTS.colour,
                               tooltip="rgb: renders pixels, which the VAE encodes (with gradients) for the model: "
                               "wire the VAE into NFSD Optimizer. latent: renders the model's latents directly "
                               "(Latent-Paint): no VAE, faster, coarser colours."),
                io.Int.Input("render_size", default=DEFAULTS.render_size, min=8, max=2048, step=8,
                             tooltip="Side of the square training renders, in pixels (resized to guidance_size for "
                             "the model). The mesh is rasterised at this size every step."),
                io.Int.Input("guidance_size", default=MODELS_OWN_SIZE, min=MODELS_OWN_SIZE, max=GUIDANCE_SIZES[1],
                             step=8,
                             tooltip="Pixels the model sees: renders are resized to this square before the VAE "
                             "encodes them (latent textures: to this divided by the model's pixels per latent). 0 (the "
                             "default): the model's own image size, 512 for SD 1.x and 2.x-base, 768 for SD 2.x-768, "
                             f"1024 for SDXL, 32 for NFSD Demo Model. Set from {GUIDANCE_SIZES[0]} up, it is used as "
                             "set."),
                io.Int.Input("batch_size", default=DEFAULTS.batch_size, min=BATCH_SIZES[0], max=BATCH_SIZES[1],
                             tooltip="Cameras per step, spread around the mesh."),
                io.Combo.Input("shading", options=list(SHADINGS), default=DEFAULTS.shading,
                               tooltip="albedo: the colour as it is, like the NeRF's renders. lambertian: lit from "
                               "one fixed direction (advanced 'light', 'ambient'), so the texture learns the colour "
                               "under that light. random_light: a light near each training camera (DreamFusion). "
                               "RGB only."),
                io.Combo.Input("background", options=list(BACKGROUND_KINDS), default=DEFAULTS.background.kind,
                               tooltip="environment: a small network learns the background from the view direction. "
                               "random: a random solid colour per image (white in renders); RGB only."),
                io.Combo.Input("front", options=list(FRONTS), default=DEFAULTS.front,
                               tooltip="The axis the mesh's front faces (y is up): +z is glTF's and the pack's "
                               "meshes'. The front view prompt is painted there."),
                io.Float.Input("fit_radius", default=DEFAULTS.fit_radius, min=0.0, max=100.0, step=0.05,
                               tooltip="The mesh is centred and scaled for the cameras so its farthest point lies this "
                               "far from the centre (cameras stand 1 to 1.5 away). 0: keep it as it is. The saved "
                               "mesh keeps its own size."),
                io.Int.Input("camera_bank", default=DEFAULTS.camera_bank, min=CAMERA_BANKS[0], max=CAMERA_BANKS[1],
                             tooltip="0: new random cameras every step, the mesh rasterised for each. N: N random "
                             "cameras drawn once, their rasterisation cached (N x render_size^2 x 16 bytes); each "
                             "step takes its cameras from them."),
                io.Boolean.Input("start_colours", default=True,
                                 tooltip="Start from the mesh's own colours (vertex colours, or a file's texture) when "
                                 "it has them; off: start grey."),
                io.Int.Input("seed", default=DEFAULTS.seed, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip=f"Seed of the texture's initial weights and of the camera bank. {SEED_CONTROL}"),
                io.String.Input("advanced", default="", multiline=True, optional=True,
                                tooltip=f"JSON overrides of any other texture setting, applied last, e.g. "
                                f"{ADVANCED_EXAMPLE} (see README, Texture a mesh). Empty: none."),
            ],
            outputs=[Texture.Output(display_name="texture", tooltip="The mesh texture, for NFSD Optimizer.")],
        )

    @classmethod
    def validate_inputs(cls, mesh_file=None, advanced=None) -> bool | str:
        """Refuses, when the graph is queued, a mesh_file that leads outside the input folder and
        `advanced` JSON that does not parse (None: linked, checked when it runs)."""
        parsed = True if advanced is None else validation(lambda: parse_texture_advanced(advanced))
        if parsed is not True:
            return parsed
        if mesh_file is None or mesh_file == NO_FILE:
            return True
        return refusal("mesh_file", mesh_file, folder_paths.get_input_directory(), "input", MESH_FILE_EXAMPLE,
                       EXISTING_FILE) or True

    @classmethod
    def execute(cls, mesh_file, mesh=None, **widgets) -> io.NodeOutput:
        check_finite(cls, widgets)
        settings = texture_settings(widgets)
        vertices, faces, colours = read_mesh(mesh, mesh_file)
        state = TextureState(settings, vertices, faces, colours if widgets["start_colours"] else None,
                             from_model=settings_from_model(widgets))
        check_cameras(state.surface(), settings.cameras)
        check_training_memory(state)
        return io.NodeOutput(state)

