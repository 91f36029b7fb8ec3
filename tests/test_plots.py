"""Figures: what the curves are labelled, on what data."""

import matplotlib

matplotlib.use("Agg")

from vggedu.plots import plot_history  # noqa: E402
from vggedu.training import TrainConfig, TrainResult  # noqa: E402


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
