"""Run API-format prompts through a real ComfyUI under an address-space cap; print each outcome as JSON.

    python tests/comfyui_capped.py PROMPTS.json HEADROOM_BYTES

PROMPTS.json maps a case name to an API-format prompt. ComfyUI starts first (see
comfyui_helpers), then RLIMIT_AS is set to what the process has mapped plus HEADROOM_BYTES: an input
that a node fails to refuse and tries to allocate for fails with an allocation error inside this
process instead of taking the machine down. For each case the outcome records validation, success,
the error message and the node that raised it, and the work done before the prompt ended: optimiser
steps and diffusion-model calls (comfyui_helpers.counting_work). A prompt counts as invalid when
ComfyUI refused any of its nodes at validation, although ComfyUI then still runs the outputs that passed.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

from comfyui_helpers import HeadlessServer, comfy_runtime, counting_work


def mapped_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def run_case(runtime, prompt: dict) -> dict:
    started = time.perf_counter()
    with counting_work() as work:
        result = runtime.execute(prompt, HeadlessServer())
    failure = result.event("execution_error") or {}
    return {"valid": result.valid and not result.node_errors, "success": result.success,
            "message": result.error_message,
            "node_type": failure.get("node_type"), "exception_type": failure.get("exception_type"),
            **work, "seconds": round(time.perf_counter() - started, 2)}


def main() -> None:
    import torch

    torch.set_num_threads(1)
    cases = json.loads(open(sys.argv[1]).read())
    runtime = comfy_runtime()
    cap = mapped_bytes() + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (cap, resource.getrlimit(resource.RLIMIT_AS)[1]))
    outcomes = {name: run_case(runtime, prompt) for name, prompt in cases.items()}
    print("OUTCOMES " + json.dumps(outcomes))


if __name__ == "__main__":
    main()
