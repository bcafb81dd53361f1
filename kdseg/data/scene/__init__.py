"""A procedural road-scene renderer with CARLA's 13 classes (see :mod:`kdseg.data.synth`).

The scene is a pinhole camera over a flat ground plane: a straight road towards a vanishing
point, lanes, sidewalks and terrain, roadside walls, fences, hedges and building facades with
windows, and objects standing on the ground (vehicles, pedestrians, poles with lights and
signs, trees, clutter), each projected with its depth so that far things are small and near
things occlude far ones. Colours are drawn from overlapping per-class distributions, then
hazed with distance, textured with class-dependent noise, shadowed, lit with a global cast and
blurred, so that no class is identifiable from its colour alone.

Everything is drawn into an RGB image and a label mask with the same polygons, at twice the
output resolution, then the image is area-downsampled and the mask nearest-downsampled.

Modules: :mod:`~kdseg.data.scene.colors` (the colour table), :mod:`~kdseg.data.scene.canvas` (class ids,
camera, canvas), :mod:`~kdseg.data.scene.render` (the scene and its layers, :func:`render_scene`) and
:mod:`~kdseg.data.scene.things` (what stands in it).
"""

from kdseg.data.scene.canvas import NUM_CLASSES
from kdseg.data.scene.render import render_scene

__all__ = ["NUM_CLASSES", "render_scene"]
