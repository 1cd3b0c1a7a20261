"""The GPU acceptance run: one command, one Markdown report, within ``--budget`` seconds.

    python bench/gpu_check.py [--out gpu_report.md] [--budget 540] [--epoch-images 20000]
    python bench/gpu_check.py --dry-run --budget 60   # every part that needs no CUDA, on the CPU

Parts, in order of value, each in its own process with a time limit (the smaller of its
own and what is left of the budget), each reported whatever the others do; the report is
rewritten whole after every part (a temp file, then renamed) and each part's text is
printed as it ends, so a run cut short still brings back what it finished:

1. Environment.
2. Kernels, fp32 / TF32 / bf16: the Triton op against compute-all-then-mask and against
   one cuDNN conv of the same active FLOPs, forward + backward, with TFLOP/s and the
   targets: >= 0.8 E/k over compute-all, >= 0.7 of cuDNN's TFLOP/s.
3. ``pytest -m gpu`` on the GPU tests' module alone (Triton against PyTorch at real
   shapes, compile, a MoE ResNet-18 training step), without the search stack.
4. One training epoch of ResNet-18 on synthetic CIFAR-shaped data (in memory on the GPU):
   dense, MoE with the sparse (Triton) dispatch and MoE computing every expert, in bf16
   and fp32, with images/s and peak memory.
5. A 3-trial search through the CLI on synthetic CIFAR-shaped image files.

``--dry-run`` runs the same code on the CPU at toy sizes (the kernels through the Triton
interpreter) so that a broken part shows before a GPU is lent; its timings mean nothing. It
first prints each part's predicted autotune sessions and compiles on a GPU
(bench/gpu_compiles.py). On the GPU the kernel part autotunes over every config and the
other parts over one or two (``AUTOMOE_TRITON_CONFIGS``, :data:`PART_CONFIGS`), all sharing
autotune results through Triton's disk cache (``TRITON_CACHE_AUTOTUNING=1``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the checkout's library, installed or not: a GPU machine may hold another torch than the
# pinned one, so the check must run from a plain checkout with what is there
sys.path.insert(0, str(ROOT))
DRY_RUN = "--dry-run" in sys.argv
if DRY_RUN:  # the interpreter must be chosen before triton is imported
    os.environ["TRITON_INTERPRET"] = "1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# (batch, map side, channels, experts, k) of the kernel part
KERNEL_SHAPES = [(128, 32, 128, 4, 1), (128, 32, 128, 8, 2), (128, 16, 256, 4, 1),
                 (128, 16, 256, 8, 2), (128, 8, 512, 4, 1), (128, 8, 512, 8, 1)]
DRY_KERNEL_SHAPES = [(4, 6, 16, 4, 1), (4, 5, 16, 3, 2)]
# in order of value (what training uses first): a part cut short keeps the rows it measured
PRECISIONS = {"bf16": (torch.bfloat16, True), "tf32": (torch.float32, True),
              "fp32": (torch.float32, False)}


def timed_ms(fn, repeats: int, cuda: bool) -> float:
    """Median milliseconds of ``fn`` after two warm-up calls (autotuning happens there).

    On CUDA, events on the stream time the GPU's work alone: a host clock around a sync
    would also count the launch overhead, ~15 launches for the Triton op against cuDNN's one.
    """
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(
                enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            start = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - start))
    return sorted(times)[len(times) // 2]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ parts


def part_environment(device: torch.device) -> str:
    import triton

    import automoe

    try:  # a copy of the checkout may come without git, or without its .git folder
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    commit = commit or "unknown"
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else f"CPU ({platform.processor() or platform.machine()}, "
                 f"{torch.get_num_threads()} threads)")
    rows = [["device", name], ["torch", torch.__version__], ["triton", triton.__version__],
            ["CUDA", str(torch.version.cuda)],
            ["cuDNN", str(torch.backends.cudnn.version() if device.type == "cuda" else "-")],
            ["automoe", f"{automoe.__version__} ({commit})"],
            ["date", datetime.datetime.now().isoformat(timespec="minutes")]]
    return table(["", ""], rows)


# The GPU tests' module alone, with the project's warning filters replaced: they name
# optuna, which a GPU machine need not have, and collecting the whole suite would import
# the search stack (optuna, plotly, SQLAlchemy) to select these few tests.
GPU_TESTS = "tests/kernels_tests/test_gpu.py"


def part_pytest(dry_run: bool, timeout: float) -> str:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
               "-o", "filterwarnings=default", GPU_TESTS]
    if dry_run:  # collecting shows the GPU tests import and parametrize
        command.append("--collect-only")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                              timeout=timeout)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, code = _text(exc.stdout) + _text(exc.stderr), f"none (cut at {timeout:.0f} s)"
    tail = "\n".join(output.strip().splitlines()[-15:])
    return f"`{' '.join(command[2:])}` exit code {code}\n\n```\n{tail}\n```"


def _text(output) -> str:
    """What a timed-out subprocess printed: bytes even under ``text=True``, or None."""
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def kernel_ms(device: torch.device, dtype: torch.dtype, tf32: bool, batch: int, size: int,
              channels: int, experts: int, k: int, repeats: int) -> dict[str, float]:
    """Forward + backward ms of compute-all, the Triton op and a cuDNN conv of k x C outputs."""
    from automoe.ops import moe_conv2d_reference
    from automoe.ops.moe_conv_triton import moe_conv2d_triton

    torch.manual_seed(0)
    x = torch.randn(batch, channels, size, size, device=device, dtype=dtype, requires_grad=True)
    weight = (0.05 * torch.randn(experts, channels, channels, 3, 3, device=device,
                                 dtype=dtype)).requires_grad_()
    index = torch.randn(batch, experts, device=device).topk(k, 1).indices
    gates = torch.rand(batch, k, device=device, dtype=dtype, requires_grad=True)
    dense = (0.05 * torch.randn(k * channels, channels, 3, 3, device=device, dtype=dtype)
             ).requires_grad_()
    step = {
        "all": lambda: moe_conv2d_reference(x, weight, None, index, gates, 1, 1),
        "triton": lambda: moe_conv2d_triton(x, weight, None, index, gates, 1, 1,
                                            allow_tf32=tf32),
        "cudnn": lambda: F.conv2d(x, dense, None, 1, 1),
    }
    return {name: timed_ms(lambda fn=fn: fn().float().sum().backward(), repeats,
                           device.type == "cuda")
            for name, fn in step.items()}


KERNEL_HEADER = ["precision", "B x C x map", "E", "k", "compute-all ms", "triton ms",
                 "cuDNN ms", "triton TFLOP/s", "vs compute-all", "of cuDNN TFLOP/s (>= 0.7)"]


def part_kernels(device: torch.device, dry_run: bool):
    """The kernel table's lines, each as soon as it is measured (a cut part keeps them)."""
    shapes = DRY_KERNEL_SHAPES if dry_run else KERNEL_SHAPES
    repeats = 2 if dry_run else 10
    yield from table(KERNEL_HEADER, []).splitlines()
    for precision, (dtype, tf32) in PRECISIONS.items():
        if dry_run and dtype == torch.bfloat16:
            continue  # the interpreter's bf16 dots are wrong
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        try:
            for batch, size, channels, experts, k in shapes:
                ms = kernel_ms(device, dtype, tf32, batch, size, channels, experts, k, repeats)
                flops = 3 * 2 * batch * k * channels * channels * 9 * size * size  # fwd + bwd
                tflops = flops / ms["triton"] / 1e9
                over_all = ms["all"] / ms["triton"]
                of_cudnn = ms["cudnn"] / ms["triton"]
                target = 0.8 * experts / k
                yield table(KERNEL_HEADER, [[
                    precision, f"{batch}x{channels}x{size}x{size}", str(experts), str(k),
                    f"{ms['all']:.3f}", f"{ms['triton']:.3f}", f"{ms['cudnn']:.3f}",
                    f"{tflops:.1f}",
                    f"{over_all:.2f}x {'ok' if over_all >= target else 'MISS'} "
                    f"(>= {target:.1f})",
                    f"{of_cudnn:.2f} {'ok' if of_cudnn >= 0.7 else 'MISS'}"]]).splitlines()[-1]
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def part_epoch(device: torch.device, dry_run: bool, images: int) -> str:
    import numpy as np

    from automoe.data import DatasetInfo, TensorImages
    from automoe.models import create_model
    from automoe.training import TrainConfig, train

    cuda = device.type == "cuda"
    batch = 32 if dry_run else 256
    # whole batches only: a last, smaller batch would be a shape the warm-up never ran, so
    # cuDNN's benchmark mode would tune (and Triton autotune) inside the timed epoch
    images = max(batch, images // batch * batch)
    generator = torch.Generator().manual_seed(0)
    info = DatasetInfo("cifar10", 10, 3, 32, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    train_set = TensorImages(
        torch.randint(0, 256, (images, 3, 32, 32), generator=generator, dtype=torch.uint8),
        torch.randint(0, 10, (images,), generator=generator), info, "train",
        np.arange(images), augment=True)
    models = {"dense": dict(placement="none"),
              "MoE sparse": dict(placement="all", num_experts=4, top_k=1, dispatch="auto"),
              "MoE compute-all": dict(placement="all", num_experts=4, top_k=1,
                                      dispatch="reference")}
    extra = dict(width_multiplier=0.25) if dry_run else {}
    rows = []
    for precision in ("bf16", "fp32"):
        for name, fields in models.items():
            torch.manual_seed(0)
            model = create_model("resnet18", in_channels=3, num_classes=10, image_size=32,
                                 input_mean=info.mean, input_std=info.std, **fields, **extra)
            config = TrainConfig(epochs=1, batch_size=batch, lr=0.05,
                                 precision=precision, channels_last=cuda)
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            # a warm-up run on the one batch shape the epoch has (autotuning, compiles,
            # cuDNN's benchmark plans) is not counted
            warm = TensorImages(train_set.images[:batch * 2], train_set.labels[:batch * 2],
                                info, "train", np.arange(batch * 2), augment=True)
            train(model, warm, config, device=device)
            result = train(model, train_set, config, device=device)
            peak = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if cuda else "-")
            rows.append([precision, name, f"{images / result.seconds:,.0f}", peak,
                         f"{result.history[-1]['loss']:.3f}"])
    return f"{images} images, batch {batch}\n\n" + table(
        ["precision", "model", "images/s", "peak GiB", "loss"], rows)


def part_search(device: torch.device, dry_run: bool, timeout: float) -> str:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        rng = np.random.default_rng(0)
        per_class = 6 if dry_run else 200
        for split, count in (("train", per_class), ("test", max(2, per_class // 5))):
            for label in range(10):
                folder = root / split / f"class{label}"
                folder.mkdir(parents=True)
                for i in range(count):
                    pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(folder / f"{i}.png")
        space = Path(tmp) / "gpu_check.yaml"
        model = "resnet8" if dry_run else "resnet18"
        epochs = 1 if dry_run else 2
        space.write_text(f"""name: gpu_check
trials: 3
dataset: {{name: imagefolder, image_size: 32, augment: true}}
model: {{name: {model}}}
params:
  placement: {{choices: [none, last_stage, all]}}
  experts: {{choices: [2, 4]}}
  top_k: 1
  width_multiplier: {0.25 if dry_run else 1.0}
  precision: {'fp32' if dry_run else 'bf16'}
  lr: 0.05
  epochs: {epochs}
  batch_size: {16 if dry_run else 128}
evaluation:
  batch_size: 256
  attack: {{eps: 8/255, step_size: 2/255, steps: {2 if dry_run else 10}, max_samples: 64}}
sampler: {{name: random}}
""")
        command = [sys.executable, str(ROOT / "cli.py"), "search", "--space", str(space),
                   "--data-root", str(root), "--storage", f"sqlite:///{tmp}/gpu_check.db",
                   "--artifact-dir", str(Path(tmp) / "artifacts"), "--device", str(device),
                   "--no-verify"]
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env,
                                  timeout=timeout)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output = _text(exc.stdout) + _text(exc.stderr)
            code = f"none (cut at {timeout:.0f} s)"
        seconds = time.perf_counter() - start
    tail = "\n".join(output.strip().splitlines()[-25:])
    return (f"`automoe search` of 3 trials, {seconds:.0f} s, exit code {code}\n\n"
            f"```\n{tail}\n```")


# autotune configs each part tries (None: every one); see bench/gpu_compiles.py, which
# predicts their compiles from the same table
PART_CONFIGS = {"environment": None, "kernels": None, "pytest": 1, "epoch": 2, "search": 1}
# key -> (heading, the most seconds it may take), in order of value: what a cut run
# brings back first matters most
PARTS = {
    "environment": ("Environment", 60),
    "kernels": ("Kernels (forward + backward)", 180),
    "pytest": ("pytest -m gpu", 150),
    "epoch": ("ResNet-18 epoch, CIFAR-shaped images, E = 4, k = 1 in every block", 150),
    "search": ("3-trial search on CIFAR-shaped image files", 240),
}
# seconds kept back from a part's limit for its own subprocess to be cut and reported
_MARGIN = 10


def run_part(key: str, args: argparse.Namespace, timeout: float) -> str:
    """One part's Markdown, in this process (``--part``: a child of :func:`main`)."""
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    images = 96 if args.dry_run else args.epoch_images
    inner = max(1.0, timeout - _MARGIN)
    parts = {"environment": lambda: part_environment(device),
             "pytest": lambda: part_pytest(args.dry_run, inner),
             "kernels": lambda: part_kernels(device, args.dry_run),  # lines, as measured
             "epoch": lambda: part_epoch(device, args.dry_run, images),
             "search": lambda: part_search(device, args.dry_run, inner)}
    return parts[key]()


def predicted_compiles(deadline: float) -> str:
    """The section of bench/gpu_compiles.py's table (a process of its own)."""
    timeout = max(10.0, min(180.0, deadline - time.monotonic()))
    command = [sys.executable, str(ROOT / "bench" / "gpu_compiles.py")]
    try:
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout)
        body = proc.stdout.strip() + ("" if proc.returncode == 0 else
                                      f"\n\nOVER BUDGET or FAILED\n\n```\n"
                                      f"{proc.stderr[-1500:]}\n```")
    except subprocess.TimeoutExpired:
        body = f"CUT at {timeout:.0f} s"
    return ("## Predicted Triton compiles on a GPU (replayed launches)\n\n" + body
            + "\n\nsessions x configs tried, plus one compile per further specialisation; "
            "each part on empty caches (an upper bound: the parts share Triton's caches)\n")


def write_report(out: Path, sections: list[str]) -> None:
    """The report so far, whole: a temp file, then renamed over the last one."""
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(sections))
    tmp.replace(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_report.md", help="Markdown report to write")
    parser.add_argument("--dry-run", action="store_true",
                        help="run on the CPU at toy sizes (checks the script, not the GPU)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all parts: each gets the smaller of its own limit "
                             "and what is left, and parts past the budget are skipped "
                             "(default 540; a dry run: 1800, and no per-part limits, since "
                             "its CPU timings mean nothing)")
    parser.add_argument("--epoch-images", type=int, default=20_000,
                        help="images in the timed ResNet-18 epoch")
    parser.add_argument("--skip", nargs="*", default=[], choices=[*PARTS, "compiles"],
                        help="parts to leave out (compiles: a dry run's compile prediction)")
    parser.add_argument("--part", choices=list(PARTS), help=argparse.SUPPRESS)
    parser.add_argument("--part-timeout", type=float, default=600, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check needs a CUDA device; use --dry-run to check it on the CPU",
              file=sys.stderr)
        return 2
    if args.part:  # a child: print the part's Markdown (line by line where it can) and exit
        text = run_part(args.part, args, args.part_timeout)
        for line in [text] if isinstance(text, str) else text:
            print(line, flush=True)
        return 0
    if args.budget is None:
        args.budget = 1800 if args.dry_run else 540
    deadline = time.monotonic() + args.budget
    title = "automoe GPU check" + (" (dry run on the CPU: timings mean nothing)"
                                   if args.dry_run else "")
    sections = [f"# {title}\n\nbudget {args.budget:.0f} s; parts in order of value, each "
                "cut at the smaller of its limit and the budget left\n"]
    out = Path(args.out)
    failed = []
    # autotune timings go to Triton's disk cache, so a shape timed in one part's process is
    # not timed again in the next
    env = {**{k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"},
           "TRITON_CACHE_AUTOTUNING": "1"}
    if args.dry_run and "compiles" not in args.skip:  # from the parts' replayed launches
        sections.append(predicted_compiles(deadline))
        write_report(out, sections)
        print(sections[-1], flush=True)
    for key, (heading, cap) in PARTS.items():
        if key in args.skip:
            continue
        left = deadline - time.monotonic()
        start = time.perf_counter()
        print(f"[gpu_check] {heading} ...", flush=True)
        if left < 2 * _MARGIN:
            body = f"SKIPPED: {max(left, 0):.0f} s of the {args.budget:.0f} s budget left"
            failed.append(key)
        else:
            timeout = left if args.dry_run else min(cap, left)
            command = [sys.executable, str(Path(__file__).resolve()), "--part", key,
                       "--part-timeout", str(timeout), "--epoch-images",
                       str(args.epoch_images), *(["--dry-run"] if args.dry_run else [])]
            # the kernel part times every autotune config (it measures the kernels' best);
            # the others try one or two, or their compiles alone would outlast the budget
            part_env = {k: v for k, v in env.items() if k != "AUTOMOE_TRITON_CONFIGS"}
            if PART_CONFIGS[key]:
                part_env["AUTOMOE_TRITON_CONFIGS"] = str(PART_CONFIGS[key])
            if args.dry_run:
                part_env["TRITON_INTERPRET"] = "1"
            try:  # a part of its own process: a cut or a crash loses that part alone
                proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                                      timeout=timeout, env=part_env)
                body, code = proc.stdout.strip(), proc.returncode
                if code != 0:
                    body += "\n\nFAILED\n\n```\n" + proc.stderr[-3000:] + "\n```"
            except subprocess.TimeoutExpired as exc:
                body = (_text(exc.stdout).strip() + f"\n\nCUT at {timeout:.0f} s (limit "
                        f"{cap} s, budget left {left:.0f} s)\n\n```\n"
                        + _text(exc.stderr)[-1500:] + "\n```")
                code = "cut"
            if code != 0 or (key in ("pytest", "search") and "exit code 0" not in body):
                failed.append(key)
        section = f"## {heading}\n\n{body}\n\n_{time.perf_counter() - start:.0f} s_\n"
        sections.append(section)
        write_report(out, sections)  # after every part: a cut run still brings this back
        print(section, flush=True)
    print(f"[gpu_check] report written to {out}" + (f"; failed: {', '.join(failed)}"
                                                     if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
