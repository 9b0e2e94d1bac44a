"""Simple 3D objects rendered like a NeRF sees them: the data of a 3D reference prior.

- `objects`: signed distance functions of seven objects (two with a front) and the colours;
- `render`: sphere tracing through the NeRF trainer's own cameras and rays, shaded, over solid
  backgrounds.
`import nfsd_core` imports none of this: it is what a prior is built and judged with.
"""
