"""Training throughput: the product's Lightning path against a minimal PyTorch loop.

Trains the same model for a fixed number of steps (a) through the product: the config composed
from conf/ with Hydra's compose API, the `ClassifierModule` of conf/model, the `MNISTDataModule` of
conf/data and the `pl.Trainer` that conf/trainer/<cpu|gpu>.yaml describes, with the callbacks of
conf/callbacks (the progress bar included; MLflow logger off, no checkpoints: those belong to the
tracked run, not to the training path) and (b) through a hand-written loop over the same
in-memory tensors (gather a batch, `RNNClassifier` forward, cross-entropy, backward, Adam). A and
B alternate in one process over several repetitions, and medians are reported, since the machine
may be shared. The first `--warmup` steps of every repetition are not timed.

    python bench/throughput.py                                   # CPU, fp32 and bf16-mixed
    python bench/throughput.py --steps 40 --reps 3 --precision 32-true
    python bench/throughput.py --device cuda --steps 300 --warmup 30

FLOPs: forward, an LSTM layer does 2*4*h*(in+h) per time step per sample (4 gates, a multiply-add
is 2 FLOPs); the backward about twice that, so a training step is 3x the forward (the head is
negligible). The achieved GFLOP/s are set against a large square matmul of the same dtype measured
here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # a checkout without `pip install -e .` (the GPU machine)
    sys.path.insert(0, str(ROOT / "src"))

# torch, Lightning and lstm_mnist are imported in the functions that use them, so that --help
# answers at once.

DTYPES = {"32-true": "float32", "bf16-mixed": "bfloat16"}  # precision -> torch dtype name
DTYPES_DEFAULT = "32-true"


def dtype_of(precision: str):
    import torch

    return getattr(torch, DTYPES[precision])


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def compose(precision: str, args: argparse.Namespace, tmp: str):
    """The product's config for this run, as train.py would get it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    # Registers conf/config.yaml's `schema` default (and the resolver of its sweeps/ search path).
    import lstm_mnist.schema  # noqa: F401

    overrides = [
        f"trainer={'gpu' if args.device == 'cuda' else 'cpu'}",
        f"trainer.precision={precision}",
        f"num_layers={args.num_layers}",
        f"num_units={args.num_units}",
        f"batch_size={args.batch_size}",
        f"dropout={args.dropout}",
        f"max_steps={args.warmup + args.steps}",
        f"val_every={args.warmup + args.steps + 1}",  # no validation inside the timed steps
        f"trainer.default_root_dir={tmp}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def step_clock(warmup: int, last: int, device: str):
    """A callback that reads perf_counter at the end of the last warm-up step (at the start of
    training without warm-up) and of the last step (`t0`, `t1`)."""
    import pytorch_lightning as pl

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.t0 = self.t1 = 0.0

        def on_train_start(self, trainer, module) -> None:
            if warmup == 0:
                sync(device)
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step  # steps completed
            if step == warmup:
                sync(device)
                self.t0 = time.perf_counter()
            if step == last:
                sync(device)
                self.t1 = time.perf_counter()

    return StepClock()


def product_datamodule(args: argparse.Namespace):
    """The DataModule from the product's data config, decoded once (its loading is not timed)."""
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as tmp:
        datamodule = instantiate(compose(DTYPES_DEFAULT, args, tmp).data)
    datamodule.setup()
    return datamodule


def run_product(precision: str, args: argparse.Namespace, seed: int, datamodule) -> float:
    """Samples/s of the timed steps through the product's training path."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(precision, args, tmp)
        pl.seed_everything(seed, verbose=False)
        model = instantiate(cfg.model)
        clock = step_clock(args.warmup, args.warmup + args.steps, args.device)
        # The callbacks every run gets (conf/callbacks: the progress bar, ...), as the tracked
        # run instantiates them; logger and checkpoints off.
        callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
        trainer = instantiate(
            cfg.trainer, callbacks=[*callbacks, clock], logger=False, enable_checkpointing=False
        )
        if args.quiet_bar and trainer.progress_bar_callback is not None:
            trainer.progress_bar_callback.disable()
        trainer.fit(model, datamodule=datamodule)
    return args.steps * args.batch_size / (clock.t1 - clock.t0)


def run_plain(precision: str, args: argparse.Namespace, seed: int, datamodule) -> float:
    """Samples/s of the timed steps through a minimal hand-written loop over the same tensors."""
    import torch
    import torch.nn.functional as F

    from lstm_mnist.model import RNNClassifier

    device, bs = args.device, args.batch_size
    train = datamodule.splits["train"]
    images, labels = train.images.to(device), train.labels.to(device)  # as the product has them
    torch.manual_seed(seed)
    model = RNNClassifier(
        cell="lstm", num_units=args.num_units, num_layers=args.num_layers, dropout=args.dropout
    )
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    n = len(labels)
    perm = torch.randperm(n, device=images.device)
    t0 = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            t0 = time.perf_counter()
        i = (step * bs) % (n - bs + 1)
        idx = perm[i : i + bs]
        x, y = images[idx].float().div_(255), labels[idx]
        with autocast:
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return args.steps * bs / (time.perf_counter() - t0)


def matmul_peak(dtype: torch.dtype, device: str, n: int, batch_s: float = 0.3) -> float:
    """GFLOP/s of an n x n x n matmul in `dtype` (median of three timed batches)."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    sync(device)
    t = time.perf_counter()
    a @ b
    sync(device)
    per = max(time.perf_counter() - t, 1e-6)
    reps = max(1, int(batch_s / per))
    rates = []
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        rates.append(2 * n**3 * reps / (time.perf_counter() - t) / 1e9)
    return statistics.median(rates)


def train_flops_per_sample(args: argparse.Namespace, steps: int = 28, inp: int = 28) -> float:
    h = args.num_units
    fwd = sum(2 * 4 * h * ((inp if i == 0 else h) + h) for i in range(args.num_layers)) * steps
    return 3 * fwd


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="timed steps per repetition")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (each repetition)")
    p.add_argument("--reps", type=int, default=3, help="A/B repetitions (medians reported)")
    p.add_argument(
        "--precision", nargs="+", default=["32-true", "bf16-mixed"], choices=list(DTYPES)
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--num-layers", type=int, default=3)
    p.add_argument("--num-units", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--peak-n", type=int, default=0, help="matmul size (0: 1024 cpu, 8192 cuda)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak")
    p.add_argument(
        "--quiet-bar", action="store_true", help="hide the product's progress bar (not the default)"
    )
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.reps < 1:
        p.error("--steps and --reps must be >= 1, --warmup >= 0")

    import pytorch_lightning as pl
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*GPU available but not used.*")
    import logging

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    print(
        f"torch {torch.__version__}, lightning {pl.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
        + f", cpu capability {torch.backends.cpu.get_cpu_capability()}, threads "
        f"{torch.get_num_threads()}, oneDNN bf16 "
        f"{torch.ops.mkldnn._is_mkldnn_bf16_supported()}",
        flush=True,
    )
    print(
        f"model {args.num_layers} x {args.num_units}, batch {args.batch_size}, dropout "
        f"{args.dropout}; {args.reps} reps x ({args.warmup} warm-up + {args.steps} timed) steps",
        flush=True,
    )
    datamodule = product_datamodule(args)
    rates: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for precision in args.precision:
            order = ["product", "plain"] if rep % 2 == 0 else ["plain", "product"]
            for kind in order:
                seed = 1000 + rep
                if kind == "product":
                    r = run_product(precision, args, seed, datamodule)
                else:
                    r = run_plain(precision, args, seed, datamodule)
                rates.setdefault((precision, kind), []).append(r)
                print(f"  rep {rep} {precision:10s} {kind:7s} {r:8.1f} samples/s", flush=True)

    flops = train_flops_per_sample(args)
    n = args.peak_n or (8192 if args.device == "cuda" else 1024)
    peaks: dict[torch.dtype, float] = {}
    if not args.no_peak:
        for dtype in dict.fromkeys(dtype_of(p) for p in args.precision):
            peaks[dtype] = matmul_peak(dtype, args.device, n)
    print(f"\ntraining FLOPs per sample: {flops / 1e6:.1f} MFLOP (3x forward)")
    for dtype, peak in peaks.items():
        print(f"matmul peak {dtype} ({n}x{n}x{n}) on {args.device}: {peak:.1f} GFLOP/s")
    # Under bf16-mixed on a CPU without native bf16 the LSTM computes in fp32 (model.py): its
    # GFLOP/s are then set against the fp32 peak, which is measured for that too.
    fp32_lstm = args.device == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported()
    if fp32_lstm and "bf16-mixed" in args.precision and not args.no_peak:
        if torch.float32 not in peaks:
            peaks[torch.float32] = matmul_peak(torch.float32, args.device, n)
            print(
                f"matmul peak torch.float32 ({n}x{n}x{n}) on {args.device}: "
                f"{peaks[torch.float32]:.1f} GFLOP/s"
            )
        print("bf16-mixed: this CPU has no native bf16, so the LSTM runs in fp32 (% of fp32 peak)")
    print(
        f"\n{'precision':10s} {'product':>9s} {'plain':>9s} {'ratio':>6s} {'GFLOP/s':>8s}  % peak"
    )
    for precision in args.precision:
        prod = statistics.median(rates[(precision, "product")])
        plain = statistics.median(rates[(precision, "plain")])
        gflops = prod * flops / 1e9
        dtype = torch.float32 if fp32_lstm else dtype_of(precision)
        pct = f"{100 * gflops / peaks[dtype]:5.1f}%" if dtype in peaks else "  n/a"
        print(
            f"{precision:10s} {prod:9.1f} {plain:9.1f} {prod / plain:6.3f} {gflops:8.2f}  {pct}"
            f"   (plain {plain * flops / 1e9:.2f} GFLOP/s)"
        )
    print("samples/s are medians over reps; ratio = product / plain (budget: >= 0.95)")


if __name__ == "__main__":
    main()
