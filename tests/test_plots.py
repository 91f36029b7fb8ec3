"""Figures: what the curves are labelled, on what data."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from vggedu.plots import plot_history  # noqa: E402
from vggedu.runs import TrainResult  # noqa: E402
from vggedu.training import TrainConfig  # noqa: E402


def _rows(test_curve=False):
    rows = []
    for epoch in (1, 2, 3):
        row = dict(epoch=epoch, train_loss=1.0 / epoch, train_accuracy=0.5, val_loss=1.2 / epoch, val_accuracy=0.6)
        if test_curve:
            row.update(test_loss=1.3 / epoch, test_accuracy=0.55)
        rows.append(row)
    return rows


def _labels(fig):
    acc, loss = fig.axes
    return [line.get_label() for line in acc.get_lines()], [line.get_label() for line in loss.get_lines()]


def test_loss_labels_say_which_loss_is_label_smoothed():
    card = {"config": TrainConfig(label_smoothing=0.1).to_dict()}
    result = TrainResult(model=None, history=_rows(), test_accuracy=0.5, test_accuracy_tta=0.5, seconds=1, card=card)
    acc, loss = _labels(plot_history({"run": result}))
    assert loss == ["run: train loss (label-smoothed 0.1)", "run: validation loss (plain cross-entropy)"]
    assert acc == ["run: validation"]
    _, loss = _labels(plot_history({"plain": _rows()}, label_smoothing=0.0))
    assert loss[0] == "plain: train loss"
    _, loss = _labels(plot_history({"unknown": _rows()}))
    assert loss[0] == "unknown: train loss (as optimised)"


def test_a_test_curve_is_labelled_as_never_used_for_choices():
    acc, _ = _labels(plot_history({"run": _rows(test_curve=True)}, label_smoothing=0.0))
    assert acc == ["run: validation", "run: test (curve only, no choices)"]


def test_training_accuracy_is_drawn_when_asked_for():
    acc, _ = _labels(plot_history({"run": _rows()}, label_smoothing=0.0, train_accuracy=True))
    assert acc == ["run: validation", "run: training (augmented)"]


def test_epoch_ticks_are_whole_numbers():
    fig = plot_history({"run": _rows()}, label_smoothing=0.0)
    fig.canvas.draw()
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_confusion_colour_bar_and_cells_show_the_same_percentages():
    import torch

    from vggedu.plots import plot_confusion

    fig = plot_confusion(torch.tensor([[3, 1], [0, 4]]), ["a", "b"])
    image = fig.axes[0].get_images()[0]
    assert image.get_clim() == (0, 100) and image.get_array()[0, 0] == 75
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["100", "25", "75"]
    assert "% of the true class" in fig.axes[1].get_ylabel()


def test_grid_title_stays_clear_of_the_first_row():
    import torch

    from vggedu.plots import image_grid

    fig = image_grid(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), ["x"] * 4, columns=2, title="a title")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title_bottom = fig._suptitle.get_window_extent(renderer).y0
    first_row_top = max(ax.title.get_window_extent(renderer).y1 for ax in fig.axes[:2])
    assert title_bottom >= first_row_top


# --- slide figures ------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["A", "A-LRN", "B", "C", "D", "E"])
def test_table_1_diagram_has_one_box_per_layer_for_every_configuration(config):
    from vggedu import count_weight_layers, resolve_config
    from vggedu.plots import plot_table_1

    fig = plot_table_1([config])
    (ax,) = fig.axes
    assert len(ax.patches) == len(resolve_config(config)) + 4  # layers, three FC, soft-max
    assert f"{count_weight_layers(config)} weight layers" in ax.get_title()
    plt.close(fig)


def test_table_1_diagram_marks_what_each_column_adds():
    from vggedu.plots import plot_table_1

    fig = plot_table_1()
    assert len(fig.axes) == 6
    bold = [[p.get_linewidth() > 1 for p in ax.patches] for ax in fig.axes]
    assert sum(bold[0]) == 0  # A: nothing before it
    assert sum(bold[1]) == 1  # A-LRN adds the LRN layer
    assert sum(bold[2]) == 2  # B: two conv3 layers over A-LRN's ... minus LRN
    assert sum(bold[4]) == 3 and sum(bold[5]) == 3  # D adds 3 conv3 over C (its 1x1s replaced); E adds 3 more
    plt.close(fig)


def test_receptive_field_figure_grows_3_5_7():
    from vggedu.plots import plot_receptive_fields

    fig = plot_receptive_fields(3)
    left = fig.axes[0]
    squares = sorted(p.get_width() for p in left.patches)
    assert squares == [1, 3, 5, 7]  # the unit, then its field after 1, 2, 3 layers
    labels = [t.get_text() for t in fig.axes[1].texts]
    assert labels[:2] == ["9C²", "9C²"] and labels[-2:] == ["27C²", "49C²"]
    plt.close(fig)


@pytest.mark.parametrize("config", ["A", "C", "D", "E"])
def test_activation_shape_figure_has_a_bar_per_layer(config):
    from vggedu import layer_stats
    from vggedu.plots import plot_activation_shapes

    fig = plot_activation_shapes(config)
    rows = [r for r in layer_stats(config) if r.kind != "fc"]
    assert len(fig.axes[0].patches) == len(rows)
    assert [p.get_height() for p in fig.axes[0].patches] == [r.out_channels for r in rows]
    plt.close(fig)


def test_save_figure_writes_slide_resolution(tmp_path):
    from vggedu.plots import plot_receptive_fields, save_figure

    fig = plot_receptive_fields()
    path = save_figure(fig, tmp_path / "slides" / "rf.png", dpi=200)
    from PIL import Image

    width, _ = Image.open(path).size
    assert width > 8 * 200 * 0.8  # 8 inches at 200 dpi, less the trimmed margins
    with pytest.raises(ValueError, match=".png, .pdf or .svg"):
        save_figure(fig, tmp_path / "rf.jpg")
    plt.close(fig)


def test_grid_titles_stay_clear_of_the_images_above_them():
    import torch

    from vggedu.plots import image_grid

    fig = image_grid(
        torch.zeros(12, 3, 32, 32, dtype=torch.uint8),
        ["automobile 91%\n(true: airplane)"] * 12,
        columns=6,
        size=1.5,
        title="a title",
    )
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    first_row_bottom = min(ax.get_window_extent(renderer).y0 for ax in fig.axes[:6])
    second_row_titles_top = max(ax.title.get_window_extent(renderer).y1 for ax in fig.axes[6:])
    assert second_row_titles_top <= first_row_bottom
    plt.close(fig)


def _figures():
    import torch

    from vggedu.plots import (
        image_grid,
        plot_activation_shapes,
        plot_confusion,
        plot_receptive_fields,
        plot_table_1,
    )

    yield image_grid(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), ["x"] * 4, columns=2, row_labels=["a", "b"], title="t")
    yield plot_history({"run": _rows()}, label_smoothing=0.1, train_accuracy=True, title="t")
    yield plot_confusion(torch.tensor([[3, 1], [0, 4]]), ["a", "b"], title="t")
    yield plot_table_1()
    yield plot_receptive_fields()
    yield plot_activation_shapes("D")


def test_every_text_of_the_package_figures_is_at_least_8_pt():
    for fig in _figures():
        small = [
            (t.get_text(), t.get_fontsize())
            for t in fig.findobj(matplotlib.text.Text)
            if t.get_text().strip() and t.get_fontsize() < 8
        ]
        assert not small, small
        plt.close(fig)


RAINBOWS = {"jet", "rainbow", "gist_rainbow", "hsv", "nipy_spectral", "gist_ncar", "turbo"}


def test_package_figures_label_their_axes_and_explain_their_colours():
    for fig in _figures():
        for ax in fig.axes:
            if hasattr(ax, "_colorbar"):  # a colour bar says what its colours mean
                assert ax.get_ylabel() or ax.get_xlabel(), "a colour bar without a label"
                continue
            for image in ax.get_images():
                assert image.get_cmap().name not in RAINBOWS, image.get_cmap().name
                if image.get_array().ndim == 2:  # colour encodes a value: it needs a colour bar
                    assert image.colorbar is not None, ax.get_title()
            pictures_only = ax.get_images() and all(im.get_array().ndim == 3 for im in ax.get_images())
            if not ax.axison or pictures_only:  # diagrams and photographs have no value axes
                continue
            twin_of_labelled = any(
                other is not ax and other.get_shared_x_axes().joined(ax, other) and other.get_xlabel()
                for other in fig.axes
            )
            assert ax.get_ylabel(), ax.get_title()
            assert ax.get_xlabel() or twin_of_labelled, ax.get_title()
        plt.close(fig)
