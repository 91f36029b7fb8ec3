"""vggedu's trainer vs a plain loop in the style of a widely copied walkthrough: training images per second.

    python benchmarks/trainer_vs_plain.py --data-root /tmp/cifar10 --no-verify --data-label "CIFAR-10 (JPEG copy)"
    python benchmarks/trainer_vs_plain.py ... --fp32   # the trainer in fp32 too: no precision difference

Same model (same initial weights), same optimiser, same batch size, same device, same images;
the rounds alternate between the three loops and the median round is reported.

* plain_loop: torchvision Dataset + DataLoader + transforms, fp32, NCHW, ``loss.item()`` every step;
* plain_loop_channels_last: the same loop, fp32, with the model and every batch channels-last
  (NHWC), so ``plain_loop_channels_last / plain_loop`` is the memory format alone;
* trainer: :class:`vggedu.loaders.DeviceLoader` + :func:`vggedu.training.train_one_epoch`,
  channels-last, in the precision :func:`vggedu.devices.autocast_dtype` picks (bf16 on a GPU or
  a CPU with native bf16; fp32 on a CPU without it; ``--fp32`` forces fp32), so
  ``trainer / plain_loop_channels_last`` is the data path (and the precision, where it differs:
  the results say so).

Also the achieved FLOP/s of every arm (training FLOPs per image = 3 x the forward FLOPs of
:func:`vggedu.analysis.count_macs`, convolutions and FC layers only) and, on a CPU, its
fraction of the fp32 peak (:func:`common.cpu_fp32_peak`, with how it was computed).
"""

import copy
import os
import tempfile
from pathlib import Path

import torch
from common import compare_rates, cpu_fp32_peak, dtype_name, load, parser, pick_device, save

from vggedu.analysis import count_macs
from vggedu.devices import autocast_dtype, native_cpu_bf16
from vggedu.loaders import DeviceLoader, torchvision_loader
from vggedu.training import TrainConfig, build_model, make_optimizer, train_one_epoch

ARMS = ("plain_loop", "plain_loop_channels_last", "trainer")


def plain_loop(model, loader, optimizer, device: torch.device, *, channels_last: bool):
    """The walkthrough's loop over ``loader``, fp32; ``channels_last`` puts every batch in NHWC."""
    criterion = torch.nn.CrossEntropyLoss()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def run():
        model.train()
        running_loss = 0.0
        for x, labels in loader:
            x, labels = x.to(device, memory_format=memory_format), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(x), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()

    return run


def precision_reason(device: torch.device, fp32: bool, amp: torch.dtype | None) -> str:
    """Why the trainer runs in the precision it does, in words."""
    if fp32:
        return "--fp32: every arm in float32, so the ratios hold no precision difference"
    if amp is not None:
        return f"the trainer autocasts to {dtype_name(amp)} (autocast_dtype); the plain loops stay float32"
    if device.type == "cpu" and not native_cpu_bf16():
        return "this CPU has no native bf16, so autocast_dtype gives float32: every arm in float32"
    return f"autocast_dtype gives float32 on {device.type}: every arm in float32"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="D")
    p.add_argument("--width", type=float, default=None, help="default: 1.0 on a GPU, 0.25 on a CPU")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=None, help="images per round (default: 5,120 on a CPU, all on a GPU)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--fp32", action="store_true", help="the trainer in fp32 too (default: autocast_dtype's choice)")
    args = p.parse_args()
    device = pick_device(args.device)
    width = args.width or (1.0 if device.type == "cuda" else 0.25)
    with tempfile.TemporaryDirectory() as tmp:
        train = load(args, Path(tmp))
    images = args.images or (len(train) if device.type == "cuda" else 5120)
    train = train.subset(images)
    config = TrainConfig(model=args.model, width=width, batch_size=args.batch_size, mixed_precision=not args.fp32)
    amp = autocast_dtype(device, config.mixed_precision)
    precision = {"plain_loop": "float32", "plain_loop_channels_last": "float32", "trainer": dtype_name(amp)}

    # Three copies of one initialisation, each with its own optimiser.
    plain_model = build_model(config).to(device)
    plain_cl_model = copy.deepcopy(plain_model).to(memory_format=torch.channels_last)
    trainer_model = copy.deepcopy(plain_model).to(memory_format=torch.channels_last)
    plain_loader = torchvision_loader(
        train, args.batch_size, train=True, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    run_plain = plain_loop(plain_model, plain_loader, make_optimizer(plain_model, config), device, channels_last=False)
    run_plain_cl = plain_loop(
        plain_cl_model, plain_loader, make_optimizer(plain_cl_model, config), device, channels_last=True
    )

    trainer_opt = make_optimizer(trainer_model, config)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    device_loader = DeviceLoader(train, args.batch_size, train=True, device=device, channels_last=True)

    def run_trainer():
        train_one_epoch(trainer_model, device_loader, trainer_opt, scaler=scaler, amp_dtype=amp)

    runs = {"plain_loop": run_plain, "plain_loop_channels_last": run_plain_cl, "trainer": run_trainer}
    for run in runs.values():  # warm-up: workers, allocator, kernel choice
        run()
    n = len(device_loader) * args.batch_size
    results = compare_rates(
        {name: (run, n) for name, run in runs.items()},
        device,
        args.rounds,
        faster="trainer",
        baseline="plain_loop",
        ratios={
            "memory_format": ("plain_loop_channels_last", "plain_loop"),
            "data_path": ("trainer", "plain_loop_channels_last"),
            "total": ("trainer", "plain_loop"),
        },
    )
    differs = precision["trainer"] != "float32"
    results["ratio_meaning"] = {
        "memory_format": "plain_loop_channels_last / plain_loop: NHWC vs NCHW, same loop, same fp32",
        "data_path": "trainer / plain_loop_channels_last: on-device loader and the package's step, both NHWC"
        + (f", and {precision['trainer']} vs float32 (run with --fp32 to remove it)" if differs else ", both fp32"),
        "total": "trainer / plain_loop (also 'speedup')",
    }

    # Achieved FLOP/s: forward FLOPs = 2 x MACs; training (forward + backward, backward ~ 2 x forward) = 3 x forward.
    forward_flops = 2 * count_macs(
        config.model, input_size=32, width=width, head="cifar", num_classes=len(train.classes), batch_norm=True
    )
    train_flops = 3 * forward_flops
    peak = cpu_fp32_peak(device)
    achieved = {arm: results[arm] * train_flops for arm in ARMS}
    results["flops"] = {
        "forward_flops_per_image": forward_flops,
        "train_flops_per_image": train_flops,
        "achieved_flops_per_second": {arm: round(value) for arm, value in achieved.items()},
        "how_computed": (
            "images/s x training FLOPs per image; training FLOPs = 3 x forward (backward ~ 2 x forward), forward "
            "FLOPs = 2 x vggedu.analysis.count_macs (convolutions and FC layers; batch norm, ReLU and pooling "
            "not counted)"
        ),
        "cpu_fp32_peak": peak,
        "fraction_of_fp32_peak": (
            {arm: round(value / peak["flops_per_second"], 3) for arm, value in achieved.items()}
            if peak["flops_per_second"]
            else None
        ),
    }
    if differs and peak["flops_per_second"]:
        results["flops"]["note"] = f"the trainer ran in {precision['trainer']}: an fp32 peak is not its ceiling"
    results.update(
        model=config.model,
        width=width,
        batch_norm=True,
        batch_size=args.batch_size,
        images=n,
        precision=precision,
        precision_reason=precision_reason(device, args.fp32, amp),
        workers=args.workers,
        rounds=args.rounds,
    )
    ratios = results["ratios"]
    print("precision:", ", ".join(f"{arm} {precision[arm]}" for arm in ARMS), f"({results['precision_reason']})")
    print(
        f"channels-last / plain: {ratios['memory_format']}x; trainer / channels-last: {ratios['data_path']}x; "
        f"trainer / plain: {ratios['total']}x ({device}, VGG {config.model}-BN width {width}, "
        f"batch {args.batch_size}, {train.source})"
    )
    print(
        f"trainer: {achieved['trainer'] / 1e9:.1f} GFLOP/s achieved ({train_flops / 1e6:.1f} MFLOP per training image)"
    )
    if peak["flops_per_second"]:
        print(f"fp32 peak: {peak['how_computed']}; assumes {peak['assumptions']}")
        fractions = results["flops"]["fraction_of_fp32_peak"]
        print("fraction of fp32 peak:", ", ".join(f"{arm} {fraction:.1%}" for arm, fraction in fractions.items()))
    else:
        print(f"fp32 peak: not computed ({peak['reason']})")
    print("wrote", save("trainer_vs_plain", device, train.source, n, results, args.out, config, precision=precision))


if __name__ == "__main__":
    main()
