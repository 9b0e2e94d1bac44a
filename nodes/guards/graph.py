"""Checks of the whole prompt that NFSD Optimizer makes before its first step.

ComfyUI runs the nodes after the Optimizer only once it has finished. What would fail there must
fail before hours of optimisation instead: a NaN in a later node's widget, or a later input that
cannot take what the Optimizer returns (a canvas wired on into NFSD NeRF Turntable: the
Optimizer's output socket carries either kind, see sockets.Representation).
"""

from __future__ import annotations

from typing import Any, Iterator

from .limits import check_finite
from ..sockets import Representation

KINDS = {"NFSD_CANVAS": "a latent canvas (NFSD Latent Canvas)", "NFSD_NERF": "a NeRF (NFSD NeRF Representation)",
         "NFSD_TEXTURE": "a mesh texture (NFSD Mesh Texture)"}


def pack_classes() -> dict[str, Any]:
    """node id -> V3 class of this pack's nodes."""
    from .. import NODES  # here: the package imports the Optimizer, which imports this module

    return {node.define_schema().node_id: node for node in NODES}


def input_type(node_class, name: str) -> str | None:
    """The socket type (e.g. "NFSD_NERF") of input `name` of a V3 node class."""
    return next((item.get_io_type() for item in node_class.define_schema().inputs if item.id == name), None)


def links_from(prompt: dict, source: str, slot: int) -> Iterator[tuple[str, str, Any]]:
    """(node id, input name, class) of every pack node input in an API-format `prompt` linked to
    output `slot` of node `source`."""
    classes = pack_classes()
    for node_id, node in prompt.items():
        node_class = classes.get(node.get("class_type"))
        for name, value in node.get("inputs", {}).items():
            if node_class is not None and isinstance(value, list) and len(value) == 2 \
                    and str(value[0]) == str(source) and value[1] == slot:
                yield str(node_id), name, node_class


def check_numbers(prompt: dict) -> None:
    """Every FLOAT widget of every pack node in `prompt` is finite (see limits.check_finite)."""
    classes = pack_classes()
    for node in prompt.values():
        node_class = classes.get(node.get("class_type"))
        if node_class is not None:
            check_finite(node_class, node.get("inputs", {}))


def check_consumers(prompt: dict, optimizer_id: str, socket_type: str) -> None:
    """Every pack input that output 0 of the Optimizer `optimizer_id` reaches, directly or through
    further Optimizers, takes `socket_type` (the kind of representation being optimised)."""
    pending, seen = [str(optimizer_id)], set()
    while pending:
        source = pending.pop()
        seen.add(source)
        for node_id, name, node_class in links_from(prompt, source, 0):
            accepted = input_type(node_class, name) or ""
            schema = node_class.define_schema()
            if socket_type not in accepted.split(","):
                wanted = " or ".join(KINDS.get(kind, kind) for kind in accepted.split(","))
                raise ValueError(
                    f"{schema.display_name} (node {node_id}) takes {wanted} on '{name}', but NFSD Optimizer (node "
                    f"{optimizer_id}) optimises {KINDS.get(socket_type, socket_type)} and passes it on there: wire "
                    f"{name} from an Optimizer of {wanted}" + (", or show a canvas with NFSD Renderer"
                                                              if socket_type == "NFSD_CANVAS" else ""))
            if schema.outputs and schema.outputs[0].get_io_type() == Representation.io_type and node_id not in seen:
                pending.append(node_id)
