"""Train and evaluate a model: ``python run_recbole_attn.py --model=FPARec --dataset=ml-100k``."""

import sys

from recbole_attn.cli import main

if __name__ == "__main__":
    sys.exit(main())
