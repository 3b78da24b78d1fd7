"""Each figure draws what it claims from known data: axes scales, one curve per layer in order, shapes."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from graddoctor.reporting import figures

LINEARS = ["0", "2", "4", "6", "8"]   # fakes.mlp_layers(5): Linear at even positions
ACTS = ["1", "3", "5", "7"]


def labels(ax) -> list[str]:
    return [t.get_text() for t in ax.get_xticklabels()]


def test_gradient_flow_is_log_scale_one_point_per_layer_in_order(fake):
    ax = figures.gradient_flow(fake)
    assert ax.get_yscale() == "log"
    assert labels(ax) == LINEARS
    assert len(ax.lines) == 4  # out_grad_norm and grad_norm at the first and the last step
    assert list(ax.lines[1].get_xdata()) == [0, 1, 2, 3, 4]
    out_grad = ax.lines[0]
    expected = [0.1 * 0.3 ** (4 - k) for k in range(5)]
    np.testing.assert_allclose(out_grad.get_ydata(), expected)
    np.testing.assert_array_equal(out_grad.get_xdata(), np.arange(5))
    assert "step 0" in out_grad.get_label() and "step 19" in ax.lines[2].get_label()


def test_gradient_flow_at_chosen_steps_with_theory_overlay(fake):
    prediction = SimpleNamespace(layers=[SimpleNamespace(name=n, rel_out_grad_norm=0.5 ** (4 - k))
                                         for k, n in enumerate(LINEARS)])
    ax = figures.gradient_flow(fake, steps=[3, 7, 11], prediction=prediction, stats=("out_grad_norm",))
    assert len(ax.lines) == 4
    theory = ax.lines[-1]
    assert theory.get_label().startswith("theory")
    # scaled so that it meets the measured value at the last layer
    np.testing.assert_allclose(theory.get_ydata(), [0.1 * 0.5 ** (4 - k) for k in range(5)])


def test_gradient_flow_shows_weight_layers_unless_told(run):
    weights = [i.name for i in run.layer_info if i.kind == "param"]
    assert labels(figures.gradient_flow(run)) == weights
    assert labels(figures.gradient_flow(run, layers=run.layers)) == run.layers  # every layer records out_grad_norm


def test_gradient_flow_refuses_a_step_not_recorded(fake):
    with pytest.raises(KeyError, match="step 99 was not recorded"):
        figures.gradient_flow(fake, steps=[99])


def test_figures_refuse_what_is_not_a_run():
    with pytest.raises(TypeError, match="graddoctor.load"):
        figures.gradient_flow({"0": [1.0]})


def mesh_of(ax):
    return next(c for c in ax.collections if type(c).__name__ == "QuadMesh")


def test_heatmap_shape_is_layers_by_steps_with_log_colour(fake):
    import matplotlib.colors

    ax = figures.heatmap(fake, "out_grad_norm")
    mesh = mesh_of(ax)
    assert mesh.get_array().shape == (5, 20)
    assert isinstance(mesh.norm, matplotlib.colors.LogNorm)
    assert [t.get_text() for t in ax.get_yticklabels()] == LINEARS      # input side at the top
    assert ax.get_ylim() == (5, 0)
    np.testing.assert_allclose(mesh.get_array()[0, 0], 0.1 * 0.3 ** 4)


def test_heatmap_of_a_long_run_is_subsampled_to_max_steps():
    values = np.exp(-np.arange(3 * 2000) / 1000.0).reshape(3, 2000)
    ax = figures.heatmap(values, "grad_norm", layers=["a", "b", "c"], max_steps=100)
    array = mesh_of(ax).get_array()
    assert array.shape == (3, 100)
    assert array[0, 0] == values[0, 0] and array[0, -1] == values[0, -1]   # first and last step kept


def test_heatmap_marks_recorded_nonfinite_and_uses_symlog_for_signed_values():
    import matplotlib.colors

    values = np.array([[1.0, -2.0, np.inf], [0.5, np.nan, 3.0]])
    ax = figures.heatmap(values, "act_mean")
    meshes = [c for c in ax.collections if type(c).__name__ == "QuadMesh"]
    assert isinstance(meshes[0].norm, matplotlib.colors.SymLogNorm)
    assert len(meshes) == 2                                   # the second paints the NaN/Inf cells
    painted = ~np.ma.getmaskarray(meshes[1].get_array())
    assert painted.tolist() == [[False, False, True], [False, False, False]]  # in an array NaN = not recorded


def test_heatmap_of_a_run_paints_a_recorded_nan_but_not_a_missing_value():
    from fakes import fake_run, mlp_layers

    run = fake_run(mlp_layers(2), {"grad_norm": {"0": [1.0, np.nan, 2.0]}}, steps=3)  # layer '2' not recorded
    meshes = [c for c in figures.heatmap(run, "grad_norm").collections if type(c).__name__ == "QuadMesh"]
    assert meshes[0].get_array().shape == (1, 3)
    assert (~np.ma.getmaskarray(meshes[1].get_array())).tolist() == [[False, True, False]]


def test_heatmap_checks_its_array():
    with pytest.raises(ValueError, match="one name per row"):
        figures.heatmap(np.ones((2, 3)), layers=["only one"])


def test_histograms_one_curve_per_layer_in_order_as_fractions(run):
    ax = figures.histograms(run, "act")
    stairs = ax.patches
    names = [i.name for i in run.layer_info if i.kind == "activation"]  # the nonlinearities' outputs, as G&B
    assert names == ["act0", "act1", "act2"]
    assert [p.get_label() for p in stairs] == names
    assert "step 20" in ax.get_title()  # hist_every=10 over 30 steps: the last histogram step
    for patch in stairs:  # fractions of the layer's values over its own range at that step
        values, edges, _ = patch.get_data()
        assert np.sum(values) == pytest.approx(1.0) and len(edges) == 65
    every = figures.histograms(run, "act", layers=run.layers)
    assert [p.get_label() for p in every.patches] == [n for n in run.layers if run.hist(n, "act")]
    grads = figures.histograms(run, "grad", step=0)
    assert len(grads.patches) == sum(1 for layer in run.layers if run.hist(layer, "grad"))


def test_histograms_say_how_to_record_them(fake):
    with pytest.raises(ValueError, match="hist_every"):
        figures.histograms(fake)


def test_unit_fractions_dead_solid_saturated_dashed_in_unit_range(fake):
    ax = figures.unit_fractions(fake)
    drawn = ax.lines[:-2]
    assert [line.get_gid() for line in drawn] == ["dead", "saturated"] * len(ACTS)
    assert [line.get_label() for line in drawn[0::2]] == ACTS           # one legend entry per layer, in order
    assert {line.get_linestyle() for line in drawn[0::2]} == {"-"}
    assert {line.get_linestyle() for line in drawn[1::2]} == {"--"}
    assert [line.get_label() for line in ax.lines[-2:]] == ["dead", "saturated"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), np.linspace(0, 0.5, 20))
    lo, hi = ax.get_ylim()
    assert lo < 0 < 1 < hi < 1.1


def test_update_ratio_log_scale_one_line_per_layer_and_the_guide(fake):
    ax = figures.update_ratio(fake)
    assert ax.get_yscale() == "log"
    assert [line.get_label() for line in ax.lines] == LINEARS + ["guide 0.001"]
    assert list(ax.lines[-1].get_ydata()) == [1e-3, 1e-3]


def test_update_ratio_needs_it_recorded(fake):
    from fakes import fake_run, mlp_layers

    bare = fake_run(mlp_layers(2), {"grad_norm": {"0": 1.0}}, steps=3)
    with pytest.raises(ValueError, match="update_ratio=\"sample\""):
        figures.update_ratio(bare)


def test_loss_curve_from_a_run_and_from_values_marks_nonfinite(fake):
    ax = figures.loss_curve(fake)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), np.linspace(2, 0.1, 20))
    assert ax.get_yscale() == "linear"
    ax = figures.loss_curve([1.0, 1e-3, np.nan, 1e-4], steps=[0, 10, 20, 30])
    assert ax.get_yscale() == "log"
    assert list(ax.lines[1].get_xdata()) == [20]  # the NaN is marked, not hidden
    with pytest.raises(KeyError, match="run.log"):
        figures.loss_curve(fake, key="accuracy")


def test_overlay_one_labelled_curve_per_entry(fake):
    ax = figures.overlay({"a": [1.0, 2.0], "b": (["x", "y"], [3.0, 0.0])}, logy=True, guide=1.0)
    assert [line.get_label() for line in ax.lines] == ["a", "b", "guide 1"]
    assert ax.get_yscale() == "log"
    assert np.isnan(ax.lines[1].get_ydata()[1])  # zero has no place on a log axis: a gap
    curves = figures.curves_of({"r1": fake, "r2": fake}, "out_grad_norm", layer="0")
    ax = figures.overlay(curves)
    np.testing.assert_allclose(ax.lines[1].get_ydata(), fake.stat("out_grad_norm", "0"))
    with pytest.raises(ValueError, match="at least one curve"):
        figures.overlay({})


def test_figures_draw_into_a_given_axes(fake):
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 2)
    assert figures.update_ratio(fake, ax=axes[1]) is axes[1]
    assert figures.gradient_flow(fake, ax=axes[0]).figure is fig


def test_names_with_dollar_signs_draw_as_text_not_mathtext():
    import io

    from fakes import fake_run

    odd = ["$\\frac{$", "a$b$c", "<i>"]
    run = fake_run([(n, "Linear", "param") for n in odd], {"grad_norm": {n: 1.0 for n in odd},
                   "update_ratio": {n: 1e-3 for n in odd}}, steps=3, scalars={"$loss": [1.0, 0.5, 0.2]})
    for ax in (figures.gradient_flow(run), figures.heatmap(run, "grad_norm"), figures.update_ratio(run),
               figures.loss_curve(run, key="$loss")):
        ax.figure.savefig(io.BytesIO(), format="png")  # mathtext would fail to parse '$\frac{$'
    assert labels(figures.gradient_flow(run)) == ["\\$\\frac{\\$", "a\\$b\\$c", "<i>"]


def test_a_deep_model_keeps_ticks_legends_and_heights_bounded():
    from fakes import fake_run, mlp_layers, profile_stats

    deep = fake_run(mlp_layers(150), profile_stats(150, 0.99, steps=4), steps=4)
    flow = figures.gradient_flow(deep)
    assert len(flow.get_xticks()) <= 40 and labels(flow)[0] == "0" and labels(flow)[-1] == deep.layers[-1]
    heat = figures.heatmap(deep, "act_std")
    assert mesh_of(heat).get_array().shape == (299, 4)          # every layer drawn, not every name written
    assert len(heat.get_yticks()) <= 40 and heat.figure.get_figheight() <= 12
    ratio = figures.update_ratio(deep)
    entries = [t.get_text() for t in ratio.get_legend().get_texts()]
    assert len(entries) <= 7 and entries[0] == "0" and entries[-2:] == ["298", "guide 0.001"]


def test_nonfinite_and_zero_norms_are_marked_not_dropped_by_the_log_axes():
    from fakes import fake_run, mlp_layers

    layers = [n for n, t, _ in mlp_layers(3) if t == "Linear"]   # "0", "2", "4"
    run = fake_run(mlp_layers(3), {"out_grad_norm": {"0": [1.0, np.nan], "2": [1.0, 0.0], "4": 1.0},
                                   "update_ratio": {"0": [1e-3, np.inf], "2": 1e-3, "4": 1e-3}}, steps=2)
    flow = figures.gradient_flow(run, stats=("out_grad_norm",))
    marks = {line.get_label(): list(line.get_xdata()) for line in flow.lines if line.get_gid() == "key"}
    assert marks == {"NaN/Inf": [0], "0 (below the log axis)": [1]}  # layer positions, input side first
    assert labels(flow) == layers
    ratio = figures.update_ratio(run)
    assert [list(line.get_xdata()) for line in ratio.lines if line.get_label().startswith("NaN/Inf")] == [[1]]
    assert "NaN/Inf (a layer)" in [t.get_text() for t in ratio.get_legend().get_texts()]


def test_heatmap_on_a_log_scale_paints_exact_zeros_apart_from_missing_values():
    from graddoctor.reporting.figures import NONFINITE_COLOR, ZERO_COLOR

    values = np.array([[0.0, 0.5, np.nan], [0.25, 0.0, 1.0]])
    meshes = [c for c in figures.heatmap(values, "dead_frac").collections if type(c).__name__ == "QuadMesh"]
    assert len(meshes) == 2                                   # the map, then the zeros (no NaN/Inf recorded)
    assert meshes[1].get_cmap().colors == [ZERO_COLOR] != [NONFINITE_COLOR]
    assert (~np.ma.getmaskarray(meshes[1].get_array())).tolist() == [[True, False, False], [False, True, False]]


def test_histograms_name_a_layer_whose_values_were_all_nonfinite(fake):
    import dataclasses

    counts = np.zeros(64)
    counts[10] = 5
    hists = {("1", "act"): [(0, -1.0, 1.0, 3, counts)], ("3", "act"): [(0, np.nan, np.nan, 32, np.zeros(64))]}
    ax = figures.histograms(dataclasses.replace(fake, _hists=hists), "act", layers=["1", "3"])
    assert [p.get_label() for p in ax.patches] == ["1, 3 non-finite"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1, 3 non-finite", "3: all 32 values NaN/Inf"]


def test_curves_of_keeps_only_the_steps_where_a_value_was_logged(fake):
    import dataclasses

    sparse = np.full(20, np.nan)
    sparse[::5] = [4.0, 3.0, 2.0, 1.0]
    run = dataclasses.replace(fake, _scalars={"hf/grad_norm": sparse})
    steps, values = figures.curves_of({"r": run}, "hf/grad_norm")["r"]
    assert steps.tolist() == [0, 5, 10, 15] and values.tolist() == [4.0, 3.0, 2.0, 1.0]
    assert figures.curves_of({"r": run}, "loss")["r"][0].size == 0  # not logged by this run: an empty curve
