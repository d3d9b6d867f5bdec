"""pp/tg tokens/s of llama.cpp (through llama-cpp-python) on the same GGUF,
measured like `sqserve bench`: one prompt of PP tokens from an empty cache,
then TG single-token decode steps; median of REPS. For side-by-side ratios
in docs/perf.md; run from the fixtures venv (tests/requirements-fixtures.txt).

usage: python llama_cpp_bench.py MODEL THREADS [PP TG REPS]
"""
import statistics
import sys
import time

from llama_cpp import Llama


def main():
    model, threads = sys.argv[1], int(sys.argv[2])
    pp, tg, reps = (int(x) for x in (sys.argv[3:6] or (512, 128, 3)))
    llm = Llama(model_path=model, n_ctx=pp + tg + 8, n_batch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=False, verbose=False)
    vocab = llm.n_vocab()
    ids = [(i * 7919 + 13) % vocab for i in range(pp + tg)]
    pps, tgs = [], []
    for _ in range(reps):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids[:pp])
        pps.append(pp / (time.perf_counter() - t0))
        llm.reset()
        t0 = time.perf_counter()
        for i in range(tg):
            llm.eval([ids[pp + i]])
        tgs.append(tg / (time.perf_counter() - t0))
    print(f"llama.cpp threads={threads} pp{pp}={statistics.median(pps):.1f} "
          f"tg{tg}={statistics.median(tgs):.1f} (tokens/s, median of {reps})")


if __name__ == "__main__":
    main()
