"""Command line of ``run_recbole_attn.py`` (also installed as ``recbole-attn``).

Works like RecBole's ``run_recbole.py``: ``--model/-m``, ``--dataset/-d``, ``--config_files``,
any RecBole ``--key=value`` override, and ``--nproc``/``--world_size``/... for DDP.
Errors in user input are printed as one line and exit with status 2.
"""

import argparse
import os
import signal
import sys

from recbole_attn.errors import RecboleAttnError


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_recbole_attn.py",
        allow_abbrev=False,  # a prefix of an option must stay a --key=value config override
        description="Train and evaluate a recbole_attn or RecBole model. Any other --key=value "
        "is a RecBole/recbole_attn configuration override (e.g. --epochs=20 --MAX_ITEM_LIST_LENGTH=50).",
    )
    parser.add_argument("--model", "-m", type=str, default="SASRecAttn", help="registry name, e.g. FPARec or SASRec")
    parser.add_argument("--dataset", "-d", type=str, default="ml-100k", help="dataset name")
    parser.add_argument("--config_files", type=str, default=None, help="space-separated YAML files")
    parser.add_argument("--resume", type=str, default=None, help="continue an interrupted run from its *-last.pth")
    parser.add_argument("--nproc", type=int, default=1, help="processes for DDP training on this machine")
    parser.add_argument("--ip", type=str, default="localhost", help="DDP master address")
    parser.add_argument("--port", type=str, default="5678", help="DDP master port")
    parser.add_argument("--world_size", type=int, default=-1, help="total DDP processes over all machines")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this machine's processes")
    # hyper-parameter tuning (see recbole_attn/hyper.py)
    parser.add_argument("--params_file", type=str, default=None, help="tune with RecBole's HyperTuning")
    parser.add_argument("--tool", type=str, default="hyperopt", choices=["hyperopt", "ray"],
                        help="RecBole's HyperTuning (hyperopt) or Ray Tune")
    parser.add_argument("--algo", type=str, default="exhaustive", choices=["exhaustive", "random", "bayes"],
                        help="search algorithm")
    parser.add_argument("--max_evals", type=int, default=100, help="most trials")
    parser.add_argument("--early_stop", type=int, default=10, help="hyperopt only: stop after N trials without gain")
    parser.add_argument("--output_file", type=str, default=None,
                        help="tuning results file (also writes .json and -best.yaml next to it)")
    parser.add_argument("--ray_address", type=str, default=None, help="connect to a running Ray cluster")
    parser.add_argument("--cpus_per_trial", type=float, default=1.0, help="Ray: CPUs per trial")
    parser.add_argument("--gpus_per_trial", type=float, default=0.0, help="Ray: GPUs per trial (0 = CPU)")
    return parser


def raise_interrupt(signum, frame):
    """Signal handler: stop like Ctrl-C, so the interrupted run keeps its last epoch."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv=None):
    if argv is not None:
        sys.argv = [sys.argv[0]] + list(argv)  # RecBole's Config reads --key=value from sys.argv
    args, _ = build_parser().parse_known_args(sys.argv[1:])
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    signal.signal(signal.SIGTERM, raise_interrupt)  # SIGTERM stops like Ctrl-C: checkpoints stay usable
    try:
        if args.params_file:
            from recbole_attn.hyper import tune

            tune(args, config_files)
            return 0
        from recbole_attn.quick_start import run

        run(args.model, args.dataset, config_file_list=config_files, resume=args.resume, nproc=args.nproc,
            world_size=args.world_size, ip=args.ip, port=args.port, group_offset=args.group_offset)
        return 0
    except RecboleAttnError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        path = getattr(interrupt, "last_checkpoint", None)
        if path and os.path.isfile(path):
            print(f"interrupted: the last finished epoch is kept; continue with --resume={path}", file=sys.stderr)
        else:
            print("interrupted before the first epoch finished: nothing to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
