#!/usr/bin/env python3
"""corpus_pydoc.py - a second evaluation corpus besides WikiText-2, made on the
machine from what every Python install carries: the language reference topics
of `pydoc_data.topics` (English technical prose, PSF license; ~465 KB, ~110k
SmolLM2 tokens for Python 3.11). Nothing is downloaded and nothing is
committed; the text depends on the Python version, which is written first so
a result names its corpus exactly.

    python3 tests/bench/corpus_pydoc.py OUT.txt
"""
import sys

import pydoc_data.topics as topics


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    text = "\n\n".join(topics.topics[k].strip() for k in sorted(topics.topics))
    with open(sys.argv[1], "w", encoding="utf-8") as f:
        f.write(f"Python {sys.version.split()[0]} language reference topics\n\n{text}\n")
    print(f"{sys.argv[1]}: {len(text)} characters, {len(topics.topics)} topics, Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
