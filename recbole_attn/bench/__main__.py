"""``python -m recbole_attn.bench quality|speed ...``: dispatch to the benchmark's ``main``.

* ``quality``: our test metrics beside the papers' tables (:mod:`recbole_attn.bench.quality`);
* ``speed``: training time of the all-position mode against RecBole's (:mod:`recbole_attn.bench.speed`);
* ``loss``: the all-position cross-entropy, chunked two ways and unchunked (:mod:`recbole_attn.bench.loss`);
* ``score``: encoding the validation users for full-sort evaluation, two chunk orders (:mod:`recbole_attn.bench.score`);
* ``order``: which users hold out another test or validation item in another copy of a sequence file
  (:mod:`recbole_attn.bench.order`).

Each benchmark is imported only when asked for, so one that fails to import does not stop the others.
"""

import sys

COMMANDS = ("quality", "speed", "loss", "score", "order")
USAGE = "usage: python -m recbole_attn.bench {quality,speed,loss,score,order} [options]   (--help after the command for its options)"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "quality":
        from recbole_attn.bench.quality import main as command_main
    elif command == "speed":
        from recbole_attn.bench.speed import main as command_main
    elif command == "loss":
        from recbole_attn.bench.loss import main as command_main
    elif command == "score":
        from recbole_attn.bench.score import main as command_main
    elif command == "order":
        from recbole_attn.bench.order import main as command_main
    else:
        print(f"error: unknown benchmark {command!r}; choose one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return command_main(rest)


if __name__ == "__main__":
    sys.exit(main())
