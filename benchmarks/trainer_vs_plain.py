"""vggedu's trainer vs a plain loop in the style of a widely copied walkthrough: training images per second.

    python benchmarks/trainer_vs_plain.py --data-root /tmp/cifar10 --no-verify --data-label "CIFAR-10 (JPEG copy)"

Same model (same initial weights), same optimiser, same batch size, same device, same images;
the rounds alternate between the two loops and the median round is reported.

* plain: torchvision Dataset + DataLoader + transforms, fp32, NCHW, ``loss.item()`` every step;
* trainer: :class:`vggedu.data.DeviceLoader` + :func:`vggedu.training.train_one_epoch` with
  mixed precision where the device runs it fast and channels-last.
"""

import copy
import os
import tempfile
from pathlib import Path

import torch
from common import compare_rates, load, parser, pick_device, save

from vggedu.loaders import DeviceLoader, torchvision_loader
from vggedu.training import TrainConfig, autocast_dtype, build_model, make_optimizer, train_one_epoch


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="D")
    p.add_argument("--width", type=float, default=None, help="default: 1.0 on a GPU, 0.25 on a CPU")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--images", type=int, default=None, help="images per round (default: 5,120 on a CPU, all on a GPU)")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = p.parse_args()
    device = pick_device(args.device)
    width = args.width or (1.0 if device.type == "cuda" else 0.25)
    with tempfile.TemporaryDirectory() as tmp:
        train = load(args, Path(tmp))
    images = args.images or (len(train) if device.type == "cuda" else 5120)
    train = train.subset(images)
    config = TrainConfig(model=args.model, width=width, batch_size=args.batch_size)

    # plain: the walkthrough's loop
    plain_model = build_model(config).to(device)
    trainer_model = copy.deepcopy(plain_model).to(memory_format=torch.channels_last)
    plain_opt = make_optimizer(plain_model, config)
    plain_loader = torchvision_loader(
        train, args.batch_size, train=True, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    criterion = torch.nn.CrossEntropyLoss()

    def run_plain():
        plain_model.train()
        running_loss = 0.0
        for x, labels in plain_loader:
            x, labels = x.to(device), labels.to(device)
            plain_opt.zero_grad()
            loss = criterion(plain_model(x), labels)
            loss.backward()
            plain_opt.step()
            running_loss += loss.item()

    # trainer: the package's loop
    amp = autocast_dtype(device, True)
    trainer_opt = make_optimizer(trainer_model, config)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    device_loader = DeviceLoader(train, args.batch_size, train=True, device=device, channels_last=True)

    def run_trainer():
        train_one_epoch(trainer_model, device_loader, trainer_opt, scaler=scaler, amp_dtype=amp)

    run_plain(), run_trainer()  # warm-up
    n = len(device_loader) * args.batch_size
    results = compare_rates(
        {"plain_loop": (run_plain, n), "trainer": (run_trainer, n)},
        device,
        args.rounds,
        faster="trainer",
        baseline="plain_loop",
    )
    results.update(
        model=args.model,
        width=width,
        batch_norm=True,
        batch_size=args.batch_size,
        images=n,
        trainer_precision=str(amp).removeprefix("torch.") if amp else "float32",
        workers=args.workers,
        rounds=args.rounds,
    )
    print(
        f"speed-up: {results['speedup']}x ({device}, VGG {args.model}-BN width {width}, batch {args.batch_size}, "
        f"{train.source})"
    )
    print("wrote", save("trainer_vs_plain", device, train.source, n, results, args.out, config))


if __name__ == "__main__":
    main()
