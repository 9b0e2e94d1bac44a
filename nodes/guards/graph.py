"""Checks of the whole prompt that NFSD Optimizer makes before its first step.

ComfyUI runs the nodes after the Optimizer only once it has finished. What would fail there must
fail before hours of optimisation instead: a NaN in a later node's widget, a later input that
cannot take what the Optimizer returns (a canvas wired on into NFSD NeRF Turntable: the
Optimizer's output socket carries either kind, see sockets.Representation), and whatever a later
node would refuse of its widgets and of the representation it will get (its memory, NFSD
Renderer's VAE): a pack node reached by the Optimizer's representation declares those checks as
`check_before_optimizer(inputs, upstream)`, its prompt inputs and an `Upstream`; its own
`execute` makes the same checks when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
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


def consumers(prompt: dict, optimizer_id: str) -> Iterator[tuple[str, str, Any]]:
    """(node id, input name, class) of every pack input that output 0 of the Optimizer `optimizer_id`
    reaches, directly or through further nodes that pass the representation on (Optimizers)."""
    pending, seen = [str(optimizer_id)], set()
    while pending:
        source = pending.pop()
        seen.add(source)
        for node_id, name, node_class in links_from(prompt, source, 0):
            yield node_id, name, node_class
            outputs = node_class.define_schema().outputs
            if outputs and outputs[0].get_io_type() == Representation.io_type and node_id not in seen:
                pending.append(node_id)


def check_consumers(prompt: dict, optimizer_id: str, socket_type: str) -> None:
    """Every pack input that the Optimizer `optimizer_id`'s representation reaches (see `consumers`)
    takes `socket_type` (the kind of representation being optimised)."""
    for node_id, name, node_class in consumers(prompt, optimizer_id):
        accepted = input_type(node_class, name) or ""
        if socket_type not in accepted.split(","):
            wanted = " or ".join(KINDS.get(kind, kind) for kind in accepted.split(","))
            raise ValueError(
                f"{node_class.define_schema().display_name} (node {node_id}) takes {wanted} on '{name}', but NFSD "
                f"Optimizer (node {optimizer_id}) optimises {KINDS.get(socket_type, socket_type)} and passes it on "
                f"there: wire {name} from an Optimizer of {wanted}" + (", or show a canvas with NFSD Renderer"
                                                                     if socket_type == "NFSD_CANVAS" else ""))


@dataclass(frozen=True)
class Upstream:
    """What an Optimizer knows before its first step, for the nodes its representation reaches:
    the API-format `prompt`, its own node id, the representation (its settings; not yet optimised)
    and the VAE wired into it (or None)."""

    prompt: dict
    optimizer_id: str
    representation: Any
    vae: Any

    def known_vae(self, link: Any) -> Any | None:
        """The VAE a VAE input linked to `link` ([node id, slot]) will get, where that is known before
        the graph runs on: the Optimizer's own VAE, or NFSD Demo Model's (built once per session);
        else None (a loader the graph has not run yet)."""
        if not is_link(link):
            return None
        if same_link(link, self.prompt[self.optimizer_id]["inputs"].get("vae")):
            return self.vae
        source = self.prompt.get(str(link[0]), {})
        if source.get("class_type") == "NFSD_DemoModel" and link[1] == 2:
            from ..demo_model import DEFAULT_PRIOR, demo_models  # here: the node imports guards

            return demo_models(source.get("inputs", {}).get("prior") or DEFAULT_PRIOR)[2]
        return None

    def sized_with(self, link: Any) -> bool:
        """Whether `link` is the VAE that NFSD Latent Canvas sized the optimised canvas with (its pixels
        per latent and channels are that VAE's, so the two always agree)."""
        source = self.prompt[self.optimizer_id]["inputs"].get("representation")
        while is_link(source) and self.prompt.get(str(source[0]), {}).get("class_type") == "NFSD_Optimizer":
            source = self.prompt[str(source[0])]["inputs"].get("representation")
        node = self.prompt.get(str(source[0]), {}) if is_link(source) else {}
        return node.get("class_type") == "NFSD_LatentCanvas" and same_link(link, node["inputs"].get("vae"))


def is_link(value: Any) -> bool:
    """Whether a prompt input value is a link [node id, output slot] rather than a widget value."""
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def same_link(first: Any, second: Any) -> bool:
    return is_link(first) and is_link(second) and str(first[0]) == str(second[0]) and first[1] == second[1]


def check_downstream(prompt: dict, optimizer_id: str, representation, vae) -> None:
    """What each pack node reached by the Optimizer's representation (see `consumers`) would refuse
    when it runs, checked now: its `check_before_optimizer`, given its prompt inputs and an `Upstream`."""
    upstream = Upstream(prompt, str(optimizer_id), representation, vae)
    for node_id, _, node_class in consumers(prompt, optimizer_id):
        check = getattr(node_class, "check_before_optimizer", None)
        if check is not None:
            try:
                check(prompt[node_id].get("inputs", {}), upstream)
            except ValueError as error:
                raise type(error)(f"{node_class.define_schema().display_name} (node {node_id}), checked by NFSD "
                                  f"Optimizer (node {optimizer_id}) before its first step: {error}") from None
