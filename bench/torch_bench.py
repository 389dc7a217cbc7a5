#!/usr/bin/env python3
"""PyTorch peer of the seqc benchmarks in bench/*.seq.

Times one training step (zero_grad, forward, loss, backward, Adam update) of
the same six models, with the same shapes, layers, losses and batch sizes as
the .seq files, on random seeded inputs created once.

    python3 bench/torch_bench.py MODEL [--steps N] [--warmup W] [--threads T]
    python3 bench/torch_bench.py --check [MODEL]

MODEL is one of alarm, imdb_lstm, charlm, wordlm, imdb_bilstm_long, lstm_big.
For a thread setting T the script runs W warm-up steps, then N timed steps,
and prints one line:

    model=NAME threads=T median_ms=X min_ms=X max_ms=X params=P first_step_ms=X

params counts trainable parameters (PyTorch's, see below); first_step_ms is
the time from the start of the process (import of torch included) to the end
of its first training step. --threads 0 (the default) runs T=1 and T=2, each
in a fresh process of this script, and prints the line with the lower median.
--check prints each model's parameter counts and output shape.

Differences from the Keras/seqc models that change the parameter counts:
PyTorch's RNN/LSTM layers have two bias vectors (b_ih, b_hh) where Keras has
one (its GRU with reset_after=True has two, like PyTorch's); BatchNorm's
running mean and variance are buffers, not parameters. Keras' momentum 0.99
is PyTorch's momentum 0.01. Embedding ids are int64 (PyTorch's index type).

Needs only PyTorch (Debian: python3-torch). If the `python3` found first has
no torch, the script re-executes itself with /usr/bin/python3.
"""
import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time

SYSTEM_PYTHON = "/usr/bin/python3"


def process_age_ms():
    """Milliseconds since this process started (exec keeps the start time)."""
    with open("/proc/self/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()   # fields[0] is field 3
    start = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, since boot
    if hasattr(time, "CLOCK_BOOTTIME"):               # the clock of field 22
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
    else:
        with open("/proc/uptime") as f:
            now = float(f.read().split()[0])
    return (now - start) * 1000.0


def ensure_torch():
    if importlib.util.find_spec("torch") is not None:
        return
    if (os.path.exists(SYSTEM_PYTHON)
            and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
    sys.exit("torch_bench: PyTorch is not installed (apt-get install python3-torch)")


def build(name):
    """Returns (model, loss function, inputs, targets) for one benchmark."""
    import torch
    from torch import nn

    class Recurrent(nn.Module):
        """rnn/lstm/gru: every step's output, or the last step's (both
        directions' last outputs concatenated when bidirectional)."""

        def __init__(self, kind, inputs, units, sequences=False, both=False):
            super().__init__()
            cls = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[kind]
            self.cell = cls(inputs, units, batch_first=True, bidirectional=both)
            self.sequences, self.both = sequences, both

        def forward(self, x):
            out, h = self.cell(x)
            if self.sequences:
                return out
            if isinstance(h, tuple):        # LSTM: (h_n, c_n)
                h = h[0]
            return torch.cat([h[-2], h[-1]], dim=1) if self.both else h[-1]

    class BatchNorm(nn.Module):
        """Keras BatchNormalization over the last axis."""

        def __init__(self, channels):
            super().__init__()
            self.bn = nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01)

        def forward(self, x):
            return self.bn(x.reshape(-1, x.shape[-1])).reshape(x.shape)

    def ids(b, t, vocab):
        return torch.randint(0, vocab, (b, t), generator=g)

    def bits(*shape):
        return torch.randint(0, 2, shape, generator=g).float()

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    bce, sce, mse = nn.BCELoss(), nn.CrossEntropyLoss(), nn.MSELoss()
    if name == "alarm":
        b = 100
        model = nn.Sequential(Recurrent("rnn", 1, 8, sequences=True),
                              nn.Linear(8, 1), nn.Sigmoid())
        return model, bce, torch.randn(b, 20, 1, generator=g), bits(b, 20, 1)
    if name == "imdb_lstm":
        b = 32
        model = nn.Sequential(nn.Embedding(20000, 128), Recurrent("lstm", 128, 128),
                              nn.Linear(128, 1), nn.Sigmoid())
        return model, bce, ids(b, 80, 20000), bits(b, 1)
    if name == "charlm":
        b = 1024
        model = nn.Sequential(nn.Embedding(28, 8), Recurrent("lstm", 8, 128),
                              BatchNorm(128), nn.Linear(128, 64), nn.ReLU(),
                              BatchNorm(64), nn.Linear(64, 28))  # softmax in the loss
        return model, sce, ids(b, 10, 28), torch.randint(0, 28, (b,), generator=g)
    if name == "wordlm":
        b, vocab = 1024, 4855
        model = nn.Sequential(
            nn.Embedding(vocab, 8),
            Recurrent("gru", 8, 64, sequences=True), BatchNorm(64), nn.Dropout(0.15),
            Recurrent("gru", 64, 32), BatchNorm(32), nn.Dropout(0.15),
            nn.Linear(32, 16), nn.ReLU(), BatchNorm(16), nn.Dropout(0.15),
            nn.Linear(16, vocab))                                # softmax in the loss
        return model, sce, ids(b, 5, vocab), torch.randint(0, vocab, (b,), generator=g)
    if name == "imdb_bilstm_long":
        b = 32
        model = nn.Sequential(nn.Embedding(88585, 64), Recurrent("lstm", 64, 64, both=True),
                              nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 1), nn.Sigmoid())
        return model, bce, ids(b, 500, 88585), bits(b, 1)
    if name == "lstm_big":
        b = 64
        model = nn.Sequential(Recurrent("lstm", 512, 512), nn.Linear(512, 1))
        return model, mse, torch.randn(b, 100, 512, generator=g), torch.randn(b, 1, generator=g)
    raise ValueError(name)


MODELS = ["alarm", "imdb_lstm", "charlm", "wordlm", "imdb_bilstm_long", "lstm_big"]


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check(names):
    for name in names:
        model, loss_fn, x, y = build(name)
        model.train()
        out = model(x[:2])                  # a small batch keeps this quick
        loss_fn(out, y[:2])
        shape = (x.shape[0],) + tuple(out.shape[1:])
        buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
        print(f"{name}: params={trainable(model)} buffers={buffers} "
              f"input={tuple(x.shape)} {x.dtype} output={shape} "
              f"target={tuple(y.shape)} {y.dtype}")


def run(name, steps, warmup, threads):
    """Runs warmup + steps training steps with `threads` threads; returns the
    output line's fields."""
    import torch
    torch.set_num_threads(threads)
    model, loss_fn, x, y = build(name)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), eps=1e-7)
    times, first_step_ms = [], None
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        t1 = time.perf_counter()
        if first_step_ms is None:
            first_step_ms = process_age_ms()
        if i >= warmup:
            times.append((t1 - t0) * 1000.0)
    if not torch.isfinite(loss):
        sys.exit(f"torch_bench: {name}: loss is not finite")
    return {"model": name, "threads": str(threads),
            "median_ms": f"{statistics.median(times):.3f}",
            "min_ms": f"{min(times):.3f}", "max_ms": f"{max(times):.3f}",
            "params": str(trainable(model)), "first_step_ms": f"{first_step_ms:.1f}"}


def run_child(args, threads):
    """Runs one thread setting in a fresh process of this script."""
    cmd = [sys.executable, os.path.abspath(__file__), args.model, "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(threads)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
    return dict(field.split("=", 1) for field in out.split())


def main():
    ensure_torch()
    ap = argparse.ArgumentParser(description="Time one training step of a bench/*.seq model in PyTorch.")
    ap.add_argument("model", nargs="?", choices=MODELS)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    ap.add_argument("--threads", type=int, default=0,
                    help="thread count; 0 (default) tries 1 and 2 and reports the better")
    ap.add_argument("--check", action="store_true",
                    help="print parameter counts and output shapes, then exit")
    args = ap.parse_args()
    if args.check:
        check([args.model] if args.model else MODELS)
        return
    if args.model is None:
        ap.error("a MODEL is required")
    if args.steps < 1 or args.warmup < 0 or args.threads < 0:
        ap.error("need --steps >= 1, --warmup >= 0, --threads >= 0")
    if args.threads:
        result = run(args.model, args.steps, args.warmup, args.threads)
    else:
        results = [run_child(args, t) for t in (1, 2)]
        result = min(results, key=lambda r: float(r["median_ms"]))
    print(" ".join(f"{k}={result[k]}" for k in
                   ("model", "threads", "median_ms", "min_ms", "max_ms", "params", "first_step_ms")))


if __name__ == "__main__":
    main()
