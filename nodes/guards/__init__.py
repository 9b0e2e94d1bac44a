"""What a node checks before its work, since a graph is untrusted input. Nothing here is a node.

- `limits`: finite numbers, memory that fits, progress that stops on Cancel;
- `paths`: paths a graph sets stay inside ComfyUI's output folder;
- `graph`: the Optimizer's checks of the nodes its output reaches.
"""
