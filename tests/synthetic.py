"""A synthetic corpus with strong regularities, so a tiny model learns it in a few dozen steps."""
import random

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november "
         "oscar papa quebec romeo sierra tango").split()

# A model small enough for CPU tests: every stage accepts these as --key=value flags. float32:
# the same numbers on every CPU (the default is bf16 where the CPU has bf16 instructions); eager:
# compiling costs more than these few steps (tests/test_train.py covers the compiled step).
TINY_ARGS = ["--preset=tiny", "--dtype=float32", "--compile=false", "--seq_len=32",
             "--d_model=32", "--n_layers=2", "--n_heads=2", "--pred_dim=16", "--pred_depth=1",
             "--batch_size=16", "--warmup_steps=5", "--lr=3e-3", "--tokenizer=wordpiece-200",
             "--log_every=5"]


def write_corpus(folder, documents: int = 300, seed: int = 0):
    """Documents cycle through WORDS from a random start: the next word is always predictable."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(3):
        docs = []
        for _ in range(documents // 3):
            start = rng.randrange(len(WORDS))
            n = rng.randrange(30, 80)
            docs.append(" ".join(WORDS[(start + i) % len(WORDS)] for i in range(n)) + " .")
        (folder / f"part{f}.txt").write_text("\n\n".join(docs) + "\n")
    return folder
