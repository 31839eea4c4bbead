"""How much of a packed step is padding: rank_alpha's training data (the embedded ShareGPT,
``data.max_seq_len=512``, micro-batch 4), each trial drawing its own seeded order, K trials'
micro-batches stacked and padded to one width.

    python docs/findings/experiments/stack_padding_2026-12-07.py     # CPU, about 30 s

Prints, for K = 1, 3, 5 trials a pack, the padded tokens over the real ones when a stacked batch
is padded to its longest row (eager), to ``data.max_seq_len`` (CUDA graphs, one width) and to the
smallest of 4 or 8 evenly spaced widths (``trainer.graph_widths``).
"""

import math
import random

from harness.compose import compose
from harness.data import build_splits
from harness.models import load_tokenizer


def padded(longest: int, widths: tuple[int, ...]) -> int:
    return min((w for w in widths if w >= longest), default=math.ceil(longest / 8) * 8)


def main():
    run = compose(["adapter.targets=all", "eval=probes"])[0]
    splits, _ = build_splits(run.data, load_tokenizer(run.model))
    lengths = [len(e["input_ids"]) for e in splits["train"]]
    rows, top = run.trainer.micro_batch_size, run.data.max_seq_len
    print(f"{len(lengths)} examples, mean {sum(lengths) / len(lengths):.1f} tokens, longest {max(lengths)}; "
          f"micro-batch {rows}, max_seq_len {top}")
    ways = {"eager (longest row)": (), "graph_widths=1": (top,),
            "graph_widths=4": tuple(top * k // 4 for k in range(1, 5)), "graph_widths=8": tuple(top * k // 8 for k in range(1, 9))}
    for trials in (1, 3, 5):
        rng = random.Random(0)
        orders = [rng.sample(lengths, len(lengths)) for _ in range(trials)]
        real = sum(lengths) * trials
        cells = []
        for name, widths in ways.items():
            total = 0
            for i in range(0, len(lengths), rows):
                stack = [n for order in orders for n in order[i:i + rows]]
                total += padded(max(stack), widths) * len(stack)
            cells.append(f"{name} {total / real:.2f}x")
        print(f"{trials} trial(s) a pack: " + ", ".join(cells))


if __name__ == "__main__":
    main()
