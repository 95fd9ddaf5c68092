"""Our DCGAN train step beside a plain PyTorch loop of the same networks, in one run.

* ``ours``: :func:`gan_features.train.train` as ``gan-features train`` runs it (its DataLoader over an
  in-memory dataset, DDP wrapper off, losses logged every step); the time of a step is the difference
  of consecutive ``seconds`` in its ``log.jsonl``, so data loading and logging count.
* ``plain``: the textbook loop (pytorch/examples' dcgan ``main.py``): a random batch indexed from a
  uint8 tensor, one D step on real and fake, one G step, ``loss.item()`` each step.

Both at the paper's batch (128), fp32 and bf16 autocast, on random images (dense convolutions cost the
same whatever the pixels). FLOPs per image are counted by torch's FlopCounterMode over one plain step
and set against this machine's peak (speed_common.peak_gflops, measured in the same run).

``--contention``: the same train step (``radford-svhn32``, bf16) while another process spins on one
core, at torch's default threads, at the thread count ``gan-features`` chooses (gan_features.threads),
at one thread, and with ``OMP_WAIT_POLICY=PASSIVE``; quiet too, for the cost of each choice.

Run alone on a quiet machine::

    python benchmarks/train_speed.py --out-dir results

Writes ``<out-dir>/train_speed.md`` and ``.csv``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import speed_common as common

PRECISIONS = ("fp32", "bf16")


def _ours(payload: dict) -> list[float]:
    from gan_features.train import TrainConfig, train

    steps = payload["warmup"] + payload["steps"]
    dataset = common.random_dataset(common.random_images((steps + 1) * payload["batch"]))
    with tempfile.TemporaryDirectory() as out_dir:
        config = TrainConfig(arch=payload["arch"], out_dir=out_dir, steps=steps, batch_size=payload["batch"],
                             precision=payload["precision"], device="cpu", checkpoint_every=10 ** 9, log_every=1,
                             samples_every_epoch=False)
        train(config, dataset, progress=False)
        seconds = [json.loads(line)["seconds"] for line in (Path(out_dir) / "log.jsonl").open()]
    return [later - earlier for earlier, later in zip(seconds, seconds[1:])]


def plain_step(discriminator, generator, opt_d, opt_g, real, precision: str) -> tuple[float, float]:
    """pytorch/examples' DCGAN step: D on real and fake, then G through D (D's gradients computed and
    dropped at the next zero_grad, as there)."""
    import torch

    bce = torch.nn.BCEWithLogitsLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        fake = generator(generator.sample_latents(real.shape[0]))
        out_real, out_fake = discriminator(real), discriminator(fake.detach())
        loss_d = bce(out_real, torch.ones_like(out_real)) + bce(out_fake, torch.zeros_like(out_fake))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = discriminator(fake)
        loss_g = bce(out, torch.ones_like(out))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return loss_d.item(), loss_g.item()


def _plain_setup(payload: dict):
    import torch

    from gan_features.models import create_models

    torch.manual_seed(0)
    discriminator, generator = create_models(payload["arch"], seed=0)
    optimisers = [torch.optim.Adam(m.parameters(), lr=2e-4, betas=(0.5, 0.999)) for m in (discriminator, generator)]
    return discriminator, generator, *optimisers


def _plain(payload: dict) -> list[float]:
    import torch

    batch, steps = payload["batch"], payload["warmup"] + payload["steps"]
    images = torch.from_numpy(common.random_images(steps * batch))
    order = torch.randperm(len(images))
    networks = _plain_setup(payload)
    times = []
    for step in range(steps):
        start = time.perf_counter()
        real = images[order[step * batch:(step + 1) * batch]].float().div(127.5).sub(1)
        plain_step(*networks, real, payload["precision"])
        times.append(time.perf_counter() - start)
    return times[1:]  # as ours: differences after the first step


def measure(payload: dict) -> dict:
    threads = common.set_threads(payload.get("threads"))
    if payload["what"] == "peak":
        return {"gflops": {dtype: common.peak_gflops(dtype) for dtype in ("float32", "bfloat16")},
                "threads": threads}
    if payload["what"] == "flops":
        import torch

        from gan_features.train import _AdversarialPair, _adversarial_step

        discriminator, generator, opt_d, opt_g = _plain_setup(payload)
        real = torch.rand(payload["batch"], 3, 32, 32) * 2 - 1
        pair = _AdversarialPair(discriminator)
        counts = {"plain": common.flops(lambda: plain_step(discriminator, generator, opt_d, opt_g, real, "fp32")),
                  "ours": common.flops(lambda: _adversarial_step(real, generator, generator, discriminator, pair,
                                                                 opt_d, opt_g, "fp32"))}
        return {loop: count / payload["batch"] for loop, count in counts.items()}
    times = (_ours if payload["what"] == "ours" else _plain)(payload)
    return {"step_seconds": statistics.median(times[payload["warmup"] - 1:]), "threads": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="radford-imagenet32")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run (default: 6)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per row, alternating ours and plain")
    parser.add_argument("--contention", action="store_true", help="also the one-core-held measurements")
    parser.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "results"))
    args = parser.parse_args(argv)
    import pandas as pd

    from gan_features.report import write_benchmark

    script = __file__
    load_before = common.load_average()
    base = {"arch": args.arch, "batch": args.batch_size, "steps": args.steps, "warmup": args.warmup}
    peak = common.run_worker(script, {"what": "peak"})["gflops"]
    per_image = common.run_worker(script, {**base, "what": "flops"})
    print(f"peak: {common.describe_peaks(peak)}; GFLOP per image per step: {per_image}", flush=True)
    samples: dict[tuple[str, str], list[float]] = {}
    for repeat in range(args.repeats):
        for precision in PRECISIONS:
            for loop in ("plain", "ours"):
                seconds = common.run_worker(script, {**base, "what": loop, "precision": precision})["step_seconds"]
                samples.setdefault((precision, loop), []).append(seconds)
                print(f"repeat {repeat + 1}: {precision} {loop} {seconds:.3f} s/step", flush=True)
    rows = []
    for (precision, loop), seconds in samples.items():
        step = statistics.median(seconds)
        achieved = per_image[loop] * args.batch_size / step / 1e9
        dtype_peak = max(peak["bfloat16" if precision == "bf16" else "float32"].values())
        plain = statistics.median(samples[(precision, "plain")])
        rows.append({"precision": precision, "loop": loop, "s/step (median)": round(step, 3),
                     "runs": ", ".join(f"{s:.3f}" for s in seconds), "images/s": round(args.batch_size / step, 1),
                     "ours / plain": f"{plain / step:.3f}" if loop == "ours" else "",
                     "GFLOP/s": round(achieved, 1), "% of peak": round(100 * achieved / dtype_peak, 1)})
    table = pd.DataFrame(rows)
    notes = [f"`python benchmarks/train_speed.py --arch {args.arch} --batch-size {args.batch_size} --steps "
             f"{args.steps} --warmup {args.warmup} --repeats {args.repeats}"
             f"{' --contention' if args.contention else ''}`; each run a fresh process, ours and plain alternating",
             f"peak (median of 5): {common.describe_peaks(peak)}",
             f"GFLOP per image per train step (FlopCounterMode): plain {per_image['plain'] / 1e9:.3f} (G forward and "
             "backward, D forward and backward on the real and the fake batch, D forward and backward for G's loss), "
             f"ours {per_image['ours'] / 1e9:.3f} (D's weights frozen for G's loss: no weight gradients there)"]
    if args.contention:
        table = pd.concat([table, _contention(script, args)], ignore_index=True).fillna("")
    print(write_benchmark(args.out_dir, "train_speed", "Train step: ours against a plain PyTorch loop", table,
                          notes, (load_before, common.load_average())))
    return 0


CONTENTION_ARCH = "radford-svhn32"
CONTENTION_CASES = {  # label: (worker threads, extra environment)
    "torch's default threads": (None, {}),
    "gan-features' choice (gan_features.threads)": ("auto", {}),
    "one thread": (1, {}),
    "torch's default threads, OMP_WAIT_POLICY=PASSIVE": (None, {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def _contention(script: str, args):
    """Our bf16 train step of the SVHN DCGAN, quiet and with one core held by a spinning process."""
    import pandas as pd

    base = {"arch": CONTENTION_ARCH, "batch": args.batch_size, "steps": 10, "warmup": 3, "what": "ours",
            "precision": "bf16"}
    samples: dict[tuple[str, str], list[tuple[float, int]]] = {}
    for repeat in range(args.repeats):
        for machine in ("quiet", "one core held"):
            for label, (threads, env) in CONTENTION_CASES.items():
                if machine == "quiet":
                    result = common.run_worker(script, {**base, "threads": threads}, env)
                else:
                    with common.one_core_held():
                        result = common.run_worker(script, {**base, "threads": threads}, env)
                samples.setdefault((machine, label), []).append((result["step_seconds"], result["threads"]))
                print(f"repeat {repeat + 1}: {machine}, {label}: {result['step_seconds']:.3f} s/step at "
                      f"{result['threads']} threads", flush=True)
    rows = []
    for (machine, label), runs in samples.items():
        step = statistics.median(seconds for seconds, _ in runs)
        rows.append({"precision": "bf16", "loop": f"ours, {CONTENTION_ARCH}, {machine}: {label}",
                     "s/step (median)": round(step, 3),
                     "runs": ", ".join(f"{s:.3f} ({t} thr)" for s, t in runs),
                     "images/s": round(args.batch_size / step, 1)})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    if not common.worker_main(measure):
        sys.exit(main())
