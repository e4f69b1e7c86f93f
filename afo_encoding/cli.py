"""The ``afo-encoding`` command.

``afo-encoding demo`` fits an encoder on a simulated brain with the built-in defaults and
reports how well it predicts, next to the planted noise ceiling; ``afo-encoding info``
reports the installed stack (every dependency imports, and what torch can run on);
``afo-encoding fetch NAME`` downloads a public data set (``fetch --list`` lists them).
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

_STACK = (
    "numpy", "scipy", "pandas", "scikit-learn", "torch", "nibabel", "nilearn", "mne",
    "datalad", "lightning", "pytorch-optimizer", "transformers", "safetensors",
    "joblib", "tqdm", "matplotlib",
)
_IMPORT_NAME = {"scikit-learn": "sklearn", "pytorch-optimizer": "pytorch_optimizer"}


def _info(args: argparse.Namespace) -> int:
    import afo_encoding

    print(f"afo-encoding {afo_encoding.__version__}")
    print(f"python       {platform.python_version()} ({sys.executable})")
    print(f"platform     {platform.platform()}")
    failed = []
    for dist in _STACK:
        try:
            import_module(_IMPORT_NAME.get(dist, dist.replace("-", "_")))
            print(f"{dist:<18} {version(dist)}")
        except (ImportError, PackageNotFoundError) as err:
            failed.append(dist)
            print(f"{dist:<18} NOT USABLE: {err}")
    import torch

    cuda = torch.cuda.is_available()
    devices = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    print(f"torch device {'cuda: ' + devices if cuda else 'cpu only'}")
    print(f"torch threads {torch.get_num_threads()}")
    if failed:
        print(f"\n{len(failed)} dependencies failed to import: {', '.join(failed)}. "
              "Reinstall them with `pip install afo-encoding`.", file=sys.stderr)
        return 1
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(modality=args.modality, out_dir=args.out, random_state=args.seed,
             verbose=not args.quiet, paper=args.paper, max_epochs=args.max_epochs,
             quick=args.quick)
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from datasets_fetchers._registry import DATASETS, list_datasets

    if args.list:
        for name, row in list_datasets().iterrows():
            terms = " (terms must be accepted: --accept-terms)" if row["terms"] else ""
            print(f"{name}\n  {row['modality']}\n  size:    {row['size']}\n"
                  f"  license: {row['license']}{terms}\n  source:  {row['source']}")
        return 0
    if args.name is None:
        print("afo-encoding fetch: give a data set name, or --list to see them: "
              f"{', '.join(DATASETS)}.", file=sys.stderr)
        return 2
    if args.name not in DATASETS:
        print(f"afo-encoding fetch: unknown data set {args.name!r}; known: "
              f"{', '.join(DATASETS)} (afo-encoding fetch --list).", file=sys.stderr)
        return 2
    info = DATASETS[args.name]
    kwargs: dict = {"data_dir": args.data_dir, "url": args.url,
                    "verbose": 0 if args.quiet else 1}
    if info.terms:
        kwargs["accept_terms"] = args.accept_terms
    if args.subjects:
        kwargs[info.subject_argument] = args.subjects
    if args.sessions:
        if not info.sessions:
            print(f"afo-encoding fetch: {args.name} has no --sessions; give --subjects.",
                  file=sys.stderr)
            return 2
        if info.subject_argument == "sessions" and args.subjects:
            print(f"afo-encoding fetch: {args.name} calls its recording sessions subjects; "
                  "give them once, with --subjects or --sessions.", file=sys.stderr)
            return 2
        kwargs["sessions"] = args.sessions
    try:
        data = info.load_fetcher()(**kwargs)
    except (ValueError, OSError, PermissionError, RuntimeError) as err:
        print(f"afo-encoding fetch {args.name}: {err}", file=sys.stderr)
        return 1
    print(f"{args.name}: {len(data.subjects)} subject(s) in {data.data_dir}")
    for subject, y in zip(data.subjects, data.responses):
        print(f"  {subject}: {getattr(y, 'shape', '?')} responses")
    print(f"license: {data.license}\ncite: {data.citation}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``afo-encoding`` command."""
    parser = argparse.ArgumentParser(
        prog="afo-encoding",
        description="Brain encoding models from frozen vision backbones.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="fit a TopyEncoder and the linear probe on a simulated brain (pyramid "
        "backbone, CPU) and report per-area scores next to the noise ceiling",
    )
    demo.add_argument("--modality", choices=("fmri", "eeg", "meg"), default="fmri",
                      help="which simulated recording to fit (default: fmri)")
    demo.add_argument("--out", default="afo_demo",
                      help="folder for the scores and figures (default: ./afo_demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--paper", action="store_true",
                      help="the paper's recipe (SGD-trained heads) instead of the defaults")
    demo.add_argument("--max-epochs", type=int, default=None, metavar="N",
                      help="epochs of the TopyEncoder's fit (default: the recipe's own)")
    demo.add_argument("--quick", action="store_true",
                      help="smoke test in seconds: a smaller brain and 2 epochs (the scores "
                      "say that everything runs, not how well)")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="report the installed stack and the torch devices")
    info.set_defaults(func=_info)
    fetch = sub.add_parser(
        "fetch",
        help="download a public data set (only the subjects/sessions asked for) with DataLad",
        description="Download a public data set into the data directory (--data-dir, else "
        "$AFO_DATA, else ~/afo_data) with DataLad, or read it from a mirror (--url, else "
        "$AFO_DATA_MIRROR). Interrupted downloads resume when run again.",
    )
    fetch.add_argument("name", nargs="?", help="data set name (see --list)")
    fetch.add_argument("--list", action="store_true",
                       help="list the data sets with their sizes and licences")
    fetch.add_argument("--subjects", nargs="+", metavar="ID",
                       help="subjects to fetch (NSD: 1-8; cowley2023_v4: session dates; "
                       "see --list)")
    fetch.add_argument("--sessions", nargs="+", metavar="N", help="sessions to fetch")
    fetch.add_argument("--data-dir", help="where data sets live (default: $AFO_DATA, else "
                       "~/afo_data)")
    fetch.add_argument("--url", help="read from this mirror instead of the public source")
    fetch.add_argument("--accept-terms", action="store_true",
                       help="accept the data set's terms of use (NSD), having read them")
    fetch.add_argument("--quiet", action="store_true", help="no progress bars")
    fetch.set_defaults(func=_fetch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``afo-encoding`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
