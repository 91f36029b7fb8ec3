"""On-device loader vs torchvision DataLoader + transforms: augmented training images per second.

    python benchmarks/data_loaders.py --data-root /tmp/cifar10 --no-verify --data-label "CIFAR-10 (JPEG copy)"

Both produce the same thing: normalised float batches of randomly cropped (4-pixel padding)
and flipped 32x32 images, on the device. The rounds alternate between the two, so both see
the same machine load; the median round is reported.
"""

import os
import tempfile
from pathlib import Path

from common import compare_rates, load, parser, pick_device, save

from vggedu.loaders import DeviceLoader, torchvision_loader


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    args = p.parse_args()
    device = pick_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        train = load(args, Path(tmp))
    n = len(train)

    device_loader = DeviceLoader(train, args.batch_size, train=True, device=device, seed=0)
    tv_loader = torchvision_loader(
        train, args.batch_size, train=True, num_workers=args.workers, pin_memory=device.type == "cuda"
    )

    def run_device(epoch=[0]):  # noqa: B006 - a counter: each round draws a new epoch
        epoch[0] += 1
        device_loader.set_epoch(epoch[0])
        for _batch in device_loader:
            pass

    def run_torchvision():
        for x, y in tv_loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    run_device(), run_torchvision()  # warm-up: worker start, allocator, caches
    batches = len(device_loader) * args.batch_size, len(tv_loader) * args.batch_size
    results = compare_rates(
        {"device_loader": (run_device, batches[0]), "torchvision_dataloader": (run_torchvision, batches[1])},
        device,
        args.rounds,
        faster="device_loader",
        baseline="torchvision_dataloader",
    )
    results.update(batch_size=args.batch_size, workers=args.workers, rounds=args.rounds)
    print(
        f"speed-up: {results['speedup']}x ({device}, {train.source}, {n:,} images, batch {args.batch_size}, "
        f"{args.workers} workers)"
    )
    print("wrote", save("data_loaders", device, train.source, n, results, args.out))


if __name__ == "__main__":
    main()
