"""ipywidgets plumbing for the notebooks: controls that redraw a plain ``blade`` function.

An exception raised inside an ipywidgets callback does not fail a notebook run and, in
JupyterLab, only reaches the browser console. So every explorer here runs its callback through
:func:`run_safely`, which prints the traceback *into an output area under the picture*
(where a student, and the browser test, can see it) and keeps it on ``out.last_error``.

The drawing functions themselves live in :mod:`blade.viz` (or the module they explain), are
called once directly in each notebook (so a bug fails the notebook test), and are unit-tested.
"""

from __future__ import annotations

import functools
import traceback


def figure_png(fig, dpi: int = 90) -> bytes:
    """Render a matplotlib Figure to PNG bytes and close it."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def run_safely(out, fn, *args, **kwargs):
    """Call ``fn``; an exception is printed into the Output widget ``out`` instead of vanishing.

    Returns fn's result, or None after an exception, which is stored as ``out.last_error``
    (None after a successful call). The previous error text is cleared on every call.
    """
    out.last_error = None
    out.outputs = ()
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # shown to the user instead of vanishing into the JS console
        out.last_error = e
        name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__",
                                                        repr(fn))
        out.append_stderr(f"Error in widget callback {name}:\n"
                          + "".join(traceback.format_exception(e)))
        return None


def explorer(render, controls: dict, title: str | None = None):
    """A VBox of ``controls`` (name -> widget) above the picture ``render(**values)`` returns.

    ``render`` returns a matplotlib Figure; it is re-run whenever a control's value changes and
    shown in an ``ipywidgets.Image`` (a PNG: light, and it does not stall nbclient the way a
    large figure inside an Output widget does, jupyter/nbclient#312). Errors go to an Output
    widget under the picture. The box has ``.update()``, ``.image``, ``.out``, ``.controls``.
    """
    import ipywidgets as W
    from matplotlib.figure import Figure

    out = W.Output()
    out.last_error = None
    image = W.Image(format="png")

    def update(_change=None):
        fig = run_safely(out, render, **{k: w.value for k, w in controls.items()})
        if isinstance(fig, Figure):
            image.value = figure_png(fig)
        return fig

    for w in controls.values():
        w.observe(update, names="value")
    header = [W.HTML(f"<b>{title}</b>")] if title else []
    box = W.VBox(header + [W.HBox(list(controls.values()), layout=W.Layout(flex_flow="row wrap")),
                           image, out])
    box.update, box.image, box.out, box.controls = update, image, out, controls
    update()
    return box


def overlap_explorer(dataset):
    """Notebook 01: pick a scene and an instance, see Eq. 1-6 drawn (``viz.overlap_view``)."""
    import ipywidgets as W

    from .viz import overlap_view

    n0 = len(dataset[0]["labels"])
    controls = {
        "scene": W.IntSlider(value=0, min=0, max=len(dataset) - 1, description="scene"),
        "instance": W.IntSlider(value=0, min=0, max=max(n0 - 1, 0), description="instance"),
        "show_pairs": W.Checkbox(value=True, description="R^(i,j) boxes"),
        "stride": W.Dropdown(options=[1, 4, 8], value=1, description="bitmask stride"),
    }

    def fit_instance_slider(change):  # keep the instance index valid for the new scene
        controls["instance"].max = max(len(dataset[change["new"]]["labels"]) - 1, 0)

    controls["scene"].observe(fit_instance_slider, names="value")
    return explorer(functools.partial(overlap_view, dataset), controls,
                    title="Overlap regions (Eq. 3-6)")


def band_explorer(toy: dict, steps: int = 200):
    """Notebook 03: every knob of ``blade.toy.BandConfig`` as a control; ``band_view`` redraws."""
    import ipywidgets as W

    from .toy import band_view

    def slider(value, lo, hi, step, name):
        return W.FloatSlider(value=value, min=lo, max=hi, step=step, description=name,
                             continuous_update=False)

    controls = {
        "K": slider(1.0, 0.0, 5.0, 0.25, "K"),
        "alpha_proj": slider(2.0, 0.0, 4.0, 0.25, "α1 proj"),
        "alpha_pair": slider(1.0, 0.0, 4.0, 0.25, "α2 pair"),
        "alpha_con": slider(1.0, 0.0, 4.0, 0.25, "α3 con"),
        "t": slider(0.5, 0.05, 0.95, 0.05, "t"),
        "color_threshold": slider(0.3, 0.0, 1.0, 0.05, "colour τ"),
        "steps": W.IntSlider(value=steps, min=0, max=1000, step=50, description="iterations",
                             continuous_update=False),
        "use_projection": W.Checkbox(value=True, description="projection"),
        "use_pairwise": W.Checkbox(value=True, description="pairwise"),
        "use_neighbor": W.Checkbox(value=True, description="neighbour (NE)"),
        "use_uniform": W.Checkbox(value=True, description="uniform (UN)"),
    }
    return explorer(functools.partial(band_view, toy), controls,
                    title="The active band (paper Fig. 4): change a knob, the map is re-optimised")


def variants_explorer(cases: dict, steps: int = 200):
    """Notebook 03, section 7: the connectivity variants side by side (``toy.variants_view``),
    with the visible prediction's quality, the band width and the connectivity weight as
    controls."""
    import ipywidgets as W

    from .toy import M_V_MODES, variants_view

    controls = {
        "m_v": W.Dropdown(options=list(M_V_MODES), value="truth", description="m_v"),
        "ne_dilation": W.IntSlider(value=2, min=1, max=4, description="band gap",
                                   continuous_update=False),
        "alpha_con": W.FloatSlider(value=1.0, min=0.0, max=4.0, step=0.25,
                                   description="α3 con", continuous_update=False),
        "steps": W.IntSlider(value=steps, min=0, max=1000, step=50, description="iterations",
                             continuous_update=False),
    }
    return explorer(functools.partial(variants_view, cases), controls,
                    title="Where may the neighbour loss pull? box (paper), region (R), hidden "
                          "(R minus B_v), occluded (box, only if B_a reaches beyond B_v)")


def failure_explorer(model, dataset, rows, sort_by: str = "iou_amodal"):
    """Notebook 06: step through the evaluated objects from the worst ``sort_by`` up
    (``viz.failure_view``)."""
    import ipywidgets as W

    from .viz import failure_view

    n = int(rows[sort_by].notna().sum())
    controls = {
        "rank": W.IntSlider(value=0, min=0, max=max(n - 1, 0), description="worst #",
                            continuous_update=False),
        "sort_by": W.Dropdown(options=["iou_amodal", "iou_visible", "iou_occluded"],
                              value=sort_by, description="sort by"),
    }
    return explorer(functools.partial(failure_view, model, dataset, rows), controls,
                    title="Failure cases, worst first")
