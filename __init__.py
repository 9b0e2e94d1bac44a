"""NFSD (Noise-Free Score Distillation) for ComfyUI: the pack's entry point.

ComfyUI's loader imports this file and awaits `comfy_entrypoint`. The node modules import
ComfyUI, so they are imported here only when ComfyUI asks for them: importing this package
elsewhere (pytest, the nfsd_core CLI) stays free of ComfyUI. `WEB_DIRECTORY` holds the pack's
frontend extension (web/seeds.js: NFSD nodes start with their seeds fixed).
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import NFSDExtension

    return NFSDExtension()
