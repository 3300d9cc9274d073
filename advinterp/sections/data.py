"""The section of the embedded synthetic world (``dataset = "synthetic"``)."""
from __future__ import annotations

from ..report import Section
from ..study.views import ReportGroup, Run

__all__ = ["world_section"]


def world_section(group: ReportGroup, run: Run) -> Section:
    """A few scenes with their concept masks and boxes, and what the data tables hold."""
    from ..datasets.synthetic import SyntheticWorld
    from ..viz import plot_scenes

    first = group.steps[0].params
    world = SyntheticWorld(size=int(first.get("size", 64)), seed=int(first.get("seed", 0)))
    scenes = world.generate(8, str(first.get("split", "test")))
    fig = run.save_figure(plot_scenes(scenes, n=8), "scenes.png")
    parts = [f"{s.id}: {s.params.get('n', 1000)} {s.params.get('split', 'test')} scenes" for s in group.steps]
    run.summary.setdefault("world", {"data": {s.id: dict(s.params) for s in group.steps},
                                     "classes": len(world.classes), "attributes": len(world.attributes),
                                     "concepts": len(world.concepts)})
    return Section("The embedded world", [
        f"Scenes of {len(world.classes)} classes defined by {len(world.attributes)} attributes; concept masks in "
        f"Broden's categories ({', '.join(world.categories)}) and object/part boxes. Data: {'; '.join(parts)}."],
        figures=[("Sample scenes, their concept masks and boxes", fig)])
