"""Texturing a mesh inside ComfyUI: meshes from core nodes, files and the pack, baked GLB/OBJ files, resumes."""

import json

import numpy as np
import pytest
import torch
import trimesh
from nfsd_core.texture import MAX_FACES, TextureRepresentation

from comfyui_helpers import (  # noqa: F401
    TINY_TEXTURE,
    comfyui,
    progress_hook,
    requires_comfyui,
    text_to_nerf_prompt,
    text_to_texture_prompt,
)

pytestmark = requires_comfyui
MESH, TEXTURE, OPTIMIZER, BAKE, SAVE_MESH, PREVIEW_3D, TURNTABLE, SAVE_GLB = "3", "5", "6", "7", "8", "9", "10", "11"


def run(comfyui, prompt):
    result = comfyui.execute(prompt)
    assert result.valid and result.success, result.error_message
    return result


def texture_widgets(**changes) -> dict:
    return {"mesh_file": "none", **TINY_TEXTURE, **changes}


def core_mesh_of(comfyui, vertices, faces):
    """ComfyUI 0.3.64's own MESH class (vertices and faces only) holding a batch of one."""
    from comfy_extras.nodes_hunyuan3d import MESH as CoreMesh

    return CoreMesh(vertices[None], faces[None])


def test_a_mesh_is_textured_baked_saved_and_shown_in_core_3d_nodes(comfyui):
    prompt = text_to_texture_prompt(steps=3, views=3)
    prompt["12"] = {"class_type": "NFSD_SaveMesh", "inputs": {"mesh": [BAKE, 0], "filename_prefix": "NFSD/mug_obj",
                                                              "format": "obj"}}
    result = run(comfyui, prompt)
    statistics = json.loads(result.values[OPTIMIZER][2])
    assert statistics["steps_done"] == 3 and len(statistics["history"]["surface_std"]) == 3
    assert statistics["latents"] == [1, 4, 8, 8]
    assert result.values[OPTIMIZER][3].shape[-1] == 3  # the run's curves

    mesh, image, turntable = result.values[BAKE]
    assert image.shape == (1, 64, 64, 3) and 0 <= float(image.min()) and float(image.max()) <= 1
    assert turntable.shape == (3, 32, 32, 3) and float(turntable.std()) > 0.01
    demo = comfyui.run_node("NFSD_DemoMesh", object="mug", resolution=16)[0]
    assert mesh.faces.shape == demo.faces.shape  # the same triangles, their vertices cut along the UV seams
    assert mesh.uvs.shape == (1, mesh.vertices.shape[1], 2) and torch.equal(mesh.texture, image)
    assert mesh.vertex_colors is None  # coloured by its texture alone (glTF would multiply the two)

    model_file = result.values[SAVE_MESH][0]
    assert result.ui[PREVIEW_3D]["result"][0] == model_file
    glb = trimesh.load(comfyui.base / "output" / model_file, force="mesh", process=False)
    texture = np.asarray(glb.visual.material.baseColorTexture.convert("RGB"))
    np.testing.assert_array_equal(texture, (image[0].numpy() * 255).round().astype(np.uint8))
    np.testing.assert_allclose(glb.visual.uv[:, 1], 1 - mesh.uvs[0, :, 1].numpy(), atol=1e-6)  # the MESH's: glTF's
    assert len(glb.faces) == mesh.faces.shape[1]

    saved = result.ui["12"]["3d"][0]
    folder = comfyui.base / "output" / saved["subfolder"]
    stem = saved["filename"].removesuffix(".obj")
    assert (folder / f"{stem}.mtl").is_file() and (folder / f"{stem}.png").is_file()
    obj = trimesh.load(folder / saved["filename"], force="mesh", process=False)
    assert obj.visual.material.image.size == (64, 64)

    core = result.ui[SAVE_GLB]["3d"][0]  # core SaveGLB of 0.3.64 writes the shape of the same MESH
    shape_only = trimesh.load(comfyui.base / "output" / core["subfolder"] / core["filename"], force="mesh",
                              process=False)
    assert len(shape_only.faces) == mesh.faces.shape[1]


def test_the_node_takes_a_mesh_that_core_voxel_to_mesh_basic_made(comfyui):
    from comfy_extras.nodes_hunyuan3d import VOXEL

    generator = torch.Generator().manual_seed(0)
    grid = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 24, 24, 24, generator=generator), 5, 1, 2)[0]
    (mesh,) = comfyui.run_node("VoxelToMeshBasic", voxel=VOXEL(grid), threshold=0.5)
    assert mesh.faces.shape[1] > 100 and not hasattr(mesh, "uvs")
    model, clip, vae = comfyui.load_checkpoint()
    (state,) = comfyui.run_node("NFSD_MeshTexture", mesh=mesh, **texture_widgets())
    assert torch.equal(state.faces, mesh.faces[0].long()) and state.colours is None
    assert state.surface().radius == pytest.approx(0.5, abs=1e-5)  # fitted for the cameras
    (positive,) = comfyui.run_node("NFSD_ViewPrompts", clip=clip, text="a stone")
    from comfyui_helpers import GUIDANCE_DEFAULTS

    (guidance,) = comfyui.run_node("NFSD_ScoreDistillationGuidance", model=model, positive=positive, clip=clip,
                                   **GUIDANCE_DEFAULTS)
    optimised, latent, _, _ = comfyui.run_node("NFSD_Optimizer", guidance=guidance, representation=state, steps=2,
                                               learning_rate=0.01, seed=0, preview_every=0, checkpoint_dir="", vae=vae)
    assert latent["samples"].shape == (1, 4, 8, 8)
    baked, image, _ = comfyui.run_node("NFSD_TextureToMesh", texture=optimised, texture_size=64, unwrap="per_face",
                                       views=2, view_size=16)
    assert baked.faces.shape == mesh.faces.shape and baked.texture.shape == (1, 64, 64, 3)


def test_a_mesh_file_from_input_3d_is_read_and_names_leading_out_are_refused(comfyui):
    folder = comfyui.base / "input" / "3d"
    folder.mkdir(parents=True, exist_ok=True)
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.5))
    box.visual.vertex_colors = np.tile([200, 30, 20, 255], (len(box.vertices), 1)).astype(np.uint8)
    box.export(folder / "red_box.glb")
    kind, *rest = comfyui.object_info()["NFSD_MeshTexture"]["input"]["required"]["mesh_file"]
    options = kind if isinstance(kind, list) else rest[0]["options"]
    assert "3d/red_box.glb" in options  # listed as Load 3D lists its uploads

    (state,) = comfyui.run_node("NFSD_MeshTexture", **texture_widgets(mesh_file="3d/red_box.glb"))
    assert len(state.faces) == 12 and torch.allclose(state.colours, torch.tensor([200, 30, 20]) / 255.0)
    result = run(comfyui, text_to_texture_prompt(steps=1, views=1, mesh_file="3d/red_box.glb"))
    assert result.values[BAKE][0].faces.shape == (1, 12, 3)

    for escape in ("../../etc/passwd.glb", str(folder / "red_box.glb"), "3d/../../outside.glb"):
        refused = comfyui.execute(text_to_texture_prompt(steps=1, mesh_file=escape))
        assert not refused.valid, escape
        assert "mesh_file" in refused.error_message and "input folder" in refused.error_message, escape
    with pytest.raises(ValueError, match="either on the 'mesh' input or as mesh_file"):
        comfyui.run_node("NFSD_MeshTexture", mesh=comfyui.run_node("NFSD_DemoMesh", object="cube", resolution=16)[0],
                         **texture_widgets(mesh_file="3d/red_box.glb"))
    with pytest.raises(ValueError, match="no mesh: wire a MESH"):
        comfyui.run_node("NFSD_MeshTexture", **texture_widgets())
    (folder / "broken.obj").write_text("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="broken.obj"):
        comfyui.run_node("NFSD_MeshTexture", **texture_widgets(mesh_file="3d/broken.obj"))


def bad_meshes():
    vertices = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    faces = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 2, 3], [1, 2, 3]])
    nan = vertices.clone()
    nan[2, 0] = float("nan")
    return {
        "empty": ((torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.int64)), "is empty"),
        "NaN vertices": ((nan, faces), "NaN or infinite"),
        "face index out of range": ((vertices, torch.cat([faces, torch.tensor([[0, 1, 4]])])),
                                    "index vertices 0 to 4, but it has 4 vertices"),
        "10M faces": ((vertices, torch.zeros(1, 3, dtype=torch.int64).expand(10_000_000, 3)),  # a view: no memory
                      f"more than the {MAX_FACES} faces"),
    }


@pytest.mark.parametrize("case", list(bad_meshes()))
def test_bad_meshes_are_refused_before_any_work(comfyui, case):
    (vertices, faces), message = bad_meshes()[case]
    with pytest.raises(ValueError, match=message):
        comfyui.run_node("NFSD_MeshTexture", mesh=core_mesh_of(comfyui, vertices, faces), **texture_widgets())


def test_a_batch_of_meshes_is_refused_naming_the_fix(comfyui):
    from comfy_extras.nodes_hunyuan3d import MESH as CoreMesh

    one = comfyui.run_node("NFSD_DemoMesh", object="cube", resolution=16)[0]
    two = CoreMesh(one.vertices.expand(2, -1, -1), one.faces.expand(2, -1, -1))
    with pytest.raises(ValueError, match="texture one mesh at a time"):
        comfyui.run_node("NFSD_MeshTexture", mesh=two, **texture_widgets())


def optimised_weights(result) -> dict:
    return result.values[OPTIMIZER][0].weights


def test_an_interrupted_texture_resumes_to_the_uninterrupted_result(comfyui, tmp_path):
    import nodes

    settings = dict(steps=4, seed=3)
    uninterrupted = run(comfyui, text_to_texture_prompt(checkpoint_dir=f"NFSD/tests/{tmp_path.name}", **settings))
    temp = comfyui.base / "temp" / "nfsd"
    before = set(temp.glob("*")) if temp.exists() else set()

    def interrupt_after_two_steps(value, total, preview, node_id):
        if node_id == OPTIMIZER and value == 2 and preview is None:
            nodes.interrupt_processing()

    with progress_hook(interrupt_after_two_steps):
        interrupted = comfyui.execute(text_to_texture_prompt(**settings))  # no checkpoint_dir: the temp folder
    assert not interrupted.success and interrupted.event("execution_interrupted")["node_id"] == OPTIMIZER
    (saved,) = set(temp.glob("*")) - before
    state = comfyui.read_checkpoint(saved)
    assert state.step == 2 and state.identity["representation"]["type"] == "mesh_texture"

    resumed = run(comfyui, text_to_texture_prompt(**settings))
    for name, tensor in optimised_weights(uninterrupted).items():
        assert torch.equal(optimised_weights(resumed)[name], tensor), name
    assert json.loads(resumed.values[OPTIMIZER][2])["history"] == \
        json.loads(uninterrupted.values[OPTIMIZER][2])["history"]
    assert not saved.exists()  # a finished run removes its temp state


def test_a_nerf_mesh_starts_the_texture_from_its_vertex_colours(comfyui):
    nerf = run(comfyui, text_to_nerf_prompt(steps=2, views=1))
    mesh = nerf.values["8"][0]
    (state,) = comfyui.run_node("NFSD_MeshTexture", mesh=mesh, **texture_widgets())
    assert torch.allclose(state.colours, mesh.vertex_colors[0].clamp(0, 1))
    with torch.no_grad():
        start = TextureRepresentation(state.surface(), state.settings).vertex_colour()
    assert (start - state.colours).abs().max() < 2e-3  # the untrained field adds next to nothing
    (grey,) = comfyui.run_node("NFSD_MeshTexture", mesh=mesh, **texture_widgets(start_colours=False))
    assert grey.colours is None


def test_meshes_fill_the_optional_fields_a_newer_mesh_class_takes(comfyui):
    adapters = comfyui.module("nodes.adapters.mesh")
    from nfsd_core.nerf import Mesh

    class NewerMesh:  # the signature of ComfyUI's MESH after 0.3.64 (comfy_api.latest._util.geometry_types)
        def __init__(self, vertices, faces, uvs=None, vertex_colors=None, texture=None, vertex_counts=None,
                     face_counts=None):
            self.given = {"uvs": uvs, "vertex_colors": vertex_colors, "texture": texture}
            self.vertices, self.faces = vertices, faces
            self.vertex_counts, self.face_counts = vertex_counts, face_counts

    vertices, faces, colours = torch.rand(4, 3), torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.rand(4, 3)
    textured = Mesh(vertices, faces, colours, uvs=torch.rand(4, 2), texture=torch.rand(8, 8, 3))
    newer = adapters.core_mesh(textured, NewerMesh)
    assert torch.equal(newer.given["texture"][0], textured.texture) and newer.given["vertex_colors"] is None
    gltf_uvs = newer.given["uvs"][0]  # glTF's v runs down the image, as core Save GLB writes it
    assert torch.allclose(gltf_uvs, torch.stack([textured.uvs[:, 0], 1 - textured.uvs[:, 1]], dim=-1))
    assert adapters.accepted_fields() == set()  # 0.3.64's MESH takes vertices and faces only
    old = adapters.core_mesh(textured)
    assert type(old).__module__.startswith("comfy") and torch.equal(old.texture[0], textured.texture)
    (back,) = adapters.meshes_of(old)
    for name in ("vertices", "faces", "uvs", "texture"):
        assert torch.allclose(getattr(back, name), getattr(textured, name)), name
    assert back.colours is None  # a textured MESH is coloured by its texture alone
    coloured = adapters.core_mesh(Mesh(vertices, faces, colours), NewerMesh)
    assert torch.equal(coloured.given["vertex_colors"][0], colours) and coloured.given["uvs"] is None

    padded = NewerMesh(torch.rand(2, 6, 3), torch.zeros(2, 5, 3, dtype=torch.int64),
                       vertex_counts=torch.tensor([4, 6]), face_counts=torch.tensor([2, 5]))
    padded.vertex_colors = torch.rand(2, 6, 3)
    first, second = adapters.meshes_of(padded)
    assert first.vertices.shape == (4, 3) and first.faces.shape == (2, 3) and first.colours.shape == (4, 3)
    assert second.vertices.shape == (6, 3) and second.faces.shape == (5, 3)
