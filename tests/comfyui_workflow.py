"""UI-format workflow JSON (what the frontend saves and loads) to API-format prompts (what /prompt runs).

Follows the frontend's graph-to-prompt rules:
- widget values are stored in `widgets_values` in the node's input order (required, then optional),
  as `/object_info` lists it; inputs that are sockets (MODEL, LATENT, ... or `forceInput`) take no slot;
  widgets past the end of `widgets_values` (added to the node after the workflow was saved) keep their
  defaults (a combo without one: its first option);
- a widget with `control_after_generate` (explicit, or an INT named `seed`/`noise_seed`) is followed by
  one UI-only value ("fixed", "randomize", ...), and so is an image file combo with an upload button
  (Load Image's "image": the button's value); a linked widget input takes the link instead;
- Note/MarkdownNote nodes are UI only; Reroute nodes pass their link through; a PrimitiveNode supplies
  its value; a bypassed node (mode 4) passes through the input of the type asked for (same slot first);
  an input fed by a muted node (mode 2) is dropped, and muted nodes are not run.
"""

from __future__ import annotations

from typing import Any

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UI_ONLY_NODES = {"Note", "MarkdownNote"}
MUTED, BYPASSED = 2, 4


def widget_names(spec: dict[str, Any]) -> list[tuple[str, int, Any]]:
    """(input name, number of widgets_values slots it takes, default value) for the widget inputs of an
    object_info entry."""
    names = []
    for group in ("required", "optional"):
        for name, (kind, *rest) in spec["input"].get(group, {}).items():
            options = rest[0] if rest else {}
            kind_values = kind if isinstance(kind, list) else options.get("options")
            if isinstance(kind, list):
                kind = "COMBO"
            if kind not in WIDGET_TYPES or options.get("forceInput"):
                continue
            if options.get("upload"):
                raise NotImplementedError(f"upload widgets other than images ({name}) are not supported")
            control = options.get("control_after_generate") or (kind == "INT" and name in ("seed", "noise_seed"))
            upload = options.get("image_upload")
            default = options.get("default", kind_values[0] if kind == "COMBO" and kind_values else None)
            names.append((name, 1 + (1 if control or upload else 0), default))
    return names


class Converter:
    def __init__(self, workflow: dict[str, Any], object_info: dict[str, Any]):
        self.nodes = {node["id"]: node for node in workflow["nodes"]}
        self.links = {link[0]: link for link in workflow["links"]}
        self.object_info = object_info

    def convert(self) -> dict[str, dict[str, Any]]:
        prompt = {}
        for node_id, node in self.nodes.items():
            if node["type"] in UI_ONLY_NODES | {"Reroute", "PrimitiveNode"} or node.get("mode", 0) in (MUTED, BYPASSED):
                continue
            if node["type"] not in self.object_info:
                raise KeyError(f"node {node_id}: unknown node type {node['type']!r}")
            prompt[str(node_id)] = {"class_type": node["type"], "inputs": self.inputs(node)}
        return prompt

    def inputs(self, node: dict[str, Any]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        stored = list(node.get("widgets_values") or [])
        position = 0
        for name, slots, default in widget_names(self.object_info[node["type"]]):
            if position < len(stored):
                values[name] = stored[position]
            elif default is not None:
                values[name] = default
            position += slots
        for socket in node.get("inputs", []):
            if socket.get("link") is None:
                continue
            source = self.source(socket["link"], socket["type"])
            if source is None:
                values.pop(socket["name"], None)
            else:
                values[socket["name"]] = source
        return values

    def source(self, link_id: int, kind: str) -> Any:
        """[node id, slot] feeding `link_id`, following reroutes and bypasses; a primitive's value; or None."""
        _, origin, slot, *_ = self.links[link_id]
        node = self.nodes[origin]
        mode = node.get("mode", 0)
        if mode == MUTED:
            return None
        if node["type"] == "PrimitiveNode":
            return node["widgets_values"][0]
        if node["type"] == "Reroute" or mode == BYPASSED:
            candidates = node.get("inputs", [])
            ordered = candidates[slot:slot + 1] + candidates
            for socket in ordered:
                if socket.get("link") is not None and (node["type"] == "Reroute" or socket["type"] in (kind, "*")):
                    return self.source(socket["link"], kind)
            return None
        return [str(origin), slot]


def ui_to_api(workflow: dict[str, Any], object_info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The API-format prompt of a UI-format workflow, given /object_info."""
    return Converter(workflow, object_info).convert()
