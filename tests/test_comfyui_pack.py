"""ComfyUI's own loader loads the pack: every node registered, with its schema, and the workflows found."""

from comfyui_helpers import PACK_FOLDER, REPO, comfyui, requires_comfyui  # noqa: F401

pytestmark = requires_comfyui

NODE_IDS = {
    "NFSD_DemoModel": "NFSD Demo Model",
    "NFSD_DemoImage": "NFSD Demo Image",
    "NFSD_ScoreDistillationGuidance": "NFSD Score Distillation Guidance",
    "NFSD_LatentCanvas": "NFSD Latent Canvas",
    "NFSD_Optimizer": "NFSD Optimizer",
    "NFSD_Renderer": "NFSD Renderer",
    "NFSD_ScoreDecomposition": "NFSD Score Decomposition",
    "NFSD_ViewPrompts": "NFSD View Prompts",
    "NFSD_NeRFRepresentation": "NFSD NeRF Representation",
    "NFSD_NeRFTurntable": "NFSD NeRF Turntable",
    "NFSD_ExtractMesh": "NFSD NeRF to Mesh",
    "NFSD_SaveMesh": "NFSD Save Mesh",
    "NFSD_MeshTexture": "NFSD Mesh Texture",
    "NFSD_TextureToMesh": "NFSD Texture to Mesh",
    "NFSD_DemoMesh": "NFSD Demo Mesh",
}


def test_every_node_is_listed_with_its_schema(comfyui):
    info = comfyui.object_info()
    for node_id, display_name in NODE_IDS.items():
        assert node_id in info, f"{node_id} not registered (import error? see the ComfyUI log)"
        node = info[node_id]
        assert node["display_name"] == display_name
        assert node["category"].startswith("NFSD/")
        assert node["python_module"] == f"custom_nodes.{PACK_FOLDER}"
        inputs = {**node["input"]["required"], **node["input"].get("optional", {})}
        assert inputs, node_id
        for name, (kind, options) in inputs.items():
            assert options.get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert info["NFSD_Optimizer"]["output"] == ["NFSD_CANVAS,NFSD_NERF,NFSD_TEXTURE", "LATENT", "STRING", "IMAGE"]
    assert info["NFSD_Optimizer"]["input"]["required"]["representation"][0] == "NFSD_CANVAS,NFSD_NERF,NFSD_TEXTURE"
    assert info["NFSD_LatentCanvas"]["output"] == ["NFSD_CANVAS"]
    assert info["NFSD_NeRFRepresentation"]["output"] == ["NFSD_NERF"]
    assert info["NFSD_MeshTexture"]["output"] == ["NFSD_TEXTURE"]
    assert info["NFSD_TextureToMesh"]["input"]["required"]["texture"][0] == "NFSD_TEXTURE"
    assert info["NFSD_TextureToMesh"]["output"] == ["MESH", "IMAGE", "IMAGE"]
    assert info["NFSD_DemoMesh"]["output"] == ["MESH"]
    for node_id in ("NFSD_NeRFTurntable", "NFSD_ExtractMesh"):  # NeRF-only: a canvas is refused at validation
        assert info[node_id]["input"]["required"]["nerf"][0] == "NFSD_NERF"
    assert info["NFSD_ScoreDistillationGuidance"]["output"] == ["NFSD_GUIDANCE"]
    assert info["NFSD_ExtractMesh"]["output"] == ["MESH"]  # core's type: Save GLB and other 3D nodes take it
    assert info["NFSD_SaveMesh"]["output_node"] and info["NFSD_SaveMesh"]["output"] == ["STRING"]
    assert info["NFSD_DemoModel"]["output"] == ["MODEL", "CLIP", "VAE"]
    assert all(info["NFSD_DemoModel"]["output_tooltips"])
    prior, options = info["NFSD_DemoModel"]["input"]["optional"]["prior"]  # optional: older prompts name none
    assert prior == "COMBO" and options["options"] == ["digits", "shapes"] and options["default"] == "digits"


def test_pack_types_do_not_clash_with_other_packs(comfyui):
    info = comfyui.object_info()
    ours = {t for node_id in NODE_IDS for output in info[node_id]["output"] for t in output.split(",")
            if t.startswith("NFSD_")}
    theirs = {t for node_id, node in info.items() if node_id not in NODE_IDS for t in node["output"]
              if isinstance(t, str)}
    assert ours == {"NFSD_GUIDANCE", "NFSD_CANVAS", "NFSD_NERF", "NFSD_TEXTURE"}
    assert not ours & {t for output in theirs for t in output.split(",")}


def test_workflows_are_listed_as_the_packs_templates(comfyui):
    templates = comfyui.get("/workflow_templates")
    assert sorted(templates[PACK_FOLDER]) == sorted(path.stem for path in (REPO / "workflows").glob("*.json"))


def test_pyproject_passes_comfyuis_config_parser(comfyui):
    from comfy_config import config_parser

    config = config_parser.extract_node_configuration(str(REPO))
    assert config.project.name == "noise-free-score-distillation" and "comfyui" not in config.project.name.lower()
    assert config.project.version.count(".") == 2
    assert config.project.urls.repository.startswith("https://github.com/")
    assert config.project.supported_os == ["OS Independent"]
    assert config.tool_comfy.publisher_id and config.tool_comfy.display_name
    assert config.project.supported_comfyui_version.startswith(">=")
    assert not any(dep.split(">")[0].split("=")[0].strip() in ("torch", "torchvision", "torchaudio")
                   for dep in config.project.dependencies)
