"""Twin workflows stay in step: each demo twin and the NeRF resume twin equal their original but
for the differences declared here, so a change to one that the other lacks fails this test.

A twin may change the declared fields of the declared nodes (node id -> fields) and add nodes of
the declared types; every other node must be identical, and so must every link between two
nodes that neither side may rewire (whose `inputs` and `outputs` are not declared).
"""

import json
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"
NOTE = {"widgets_values"}
DEMO_LOADER = {"type", "title", "widgets_values", "properties", "size", "outputs"}  # Load Checkpoint -> Demo Model
PROMPT = {"widgets_values", "size"}
UPSCALED = {"inputs", "pos", "size"}  # an output now fed through Upscale Image By

TWINS = {
    ("nfsd_text_to_image", "demo_nfsd_text_to_image"): (
        {1: NOTE, 2: DEMO_LOADER, 3: PROMPT, 5: {"widgets_values"}, 6: {"widgets_values", "inputs"},
         9: {"widgets_values", "inputs", "pos"}},
        {"ImageScaleBy"}),
    ("sds_vs_nfsd_same_seed", "demo_sds_vs_nfsd_same_seed"): (
        {1: NOTE, 2: DEMO_LOADER, 3: PROMPT, 5: {"widgets_values"}, 6: {"widgets_values"},
         7: {"widgets_values", "inputs"}, 12: {"widgets_values"}, 13: {"widgets_values", *UPSCALED}},
        {"ImageScaleBy"}),
    ("score_decomposition", "demo_score_decomposition"): (
        {1: NOTE, 2: DEMO_LOADER - {"outputs"}, 3: PROMPT, 5: {"widgets_values", "title"}, 6: {"widgets_values"},
         8: UPSCALED, 10: UPSCALED, 11: UPSCALED, 12: UPSCALED, 13: UPSCALED},
        {"ImageScaleBy"}),
    ("nfsd_text_to_nerf", "nfsd_text_to_nerf_resume"): ({1: NOTE, 7: {"widgets_values"}}, set()),
    ("nfsd_text_to_nerf", "demo_text_to_nerf"): (  # CPU settings, the shapes prior's prompt, own file names
        {1: NOTE, 2: DEMO_LOADER, **{node: {"widgets_values"} for node in (3, 6, 7, 9, 10, 13, 14, 16)}},
        set()),
    ("texture_mesh", "demo_texture_mesh"): (  # CPU settings, the demo mesh wired in, own file names
        {1: NOTE, 2: DEMO_LOADER, 6: {"widgets_values", "inputs"},
         **{node: {"widgets_values"} for node in (3, 7, 9, 10, 12)}},
        {"NFSD_DemoMesh"}),
    ("edit_image", "demo_edit_image"): (  # Load Image -> NFSD Demo Image and its mask; 32 px; output enlarged
        {1: NOTE, 2: DEMO_LOADER, 3: PROMPT, 4: PROMPT, 5: DEMO_LOADER, 6: {"widgets_values"}, 8: {"inputs"},
         9: {"widgets_values", "inputs"}, 13: {"widgets_values", *UPSCALED}},
        {"ImageScaleBy"}),
}


def load(name: str) -> dict:
    return json.loads((WORKFLOWS / f"{name}.json").read_text())


def rewired(node_fields: dict[int, set[str]]) -> set[int]:
    return {node for node, fields in node_fields.items() if fields & {"inputs", "outputs", "type"}}


@pytest.mark.parametrize("original, twin", list(TWINS), ids=[twin for _, twin in TWINS])
def test_twin_equals_its_original_but_for_the_declared_differences(original, twin):
    node_fields, added_types = TWINS[(original, twin)]
    first, second = load(original), load(twin)
    ours = {node["id"]: node for node in first["nodes"]}
    theirs = {node["id"]: node for node in second["nodes"]}
    assert set(ours) <= set(theirs), f"{twin} lacks nodes {sorted(set(ours) - set(theirs))} of {original}"
    added = {theirs[node]["type"] for node in set(theirs) - set(ours)}
    assert added <= added_types, f"{twin} adds undeclared node types {sorted(added - added_types)}"
    for node_id, node in ours.items():
        allowed = node_fields.get(node_id, set())
        differing = {key for key in node.keys() | theirs[node_id].keys() if node.get(key) != theirs[node_id].get(key)}
        assert differing <= allowed, (f"{twin} node {node_id} ({node['type']}) differs from {original} in "
                                      f"{sorted(differing - allowed)}: change both workflows, or declare it here")
    free = set(ours) - rewired(node_fields)
    kept = {tuple(link[1:]) for link in second["links"]}
    for link in first["links"]:
        if link[1] in free and link[3] in free:
            assert tuple(link[1:]) in kept, f"{twin} lacks {original}'s link {link}"
    assert first.get("groups") == second.get("groups") and first["extra"].get("ds") == second["extra"].get("ds")
