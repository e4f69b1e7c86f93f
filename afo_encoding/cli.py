"""The ``afo-encoding`` command.

``afo-encoding demo`` fits an encoder on a simulated brain with the built-in defaults and
reports how well it predicts, next to the planted noise ceiling; ``afo-encoding info``
reports the installed stack (every dependency imports, and what torch can run on).
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

_STACK = (
    "numpy", "scipy", "pandas", "scikit-learn", "torch", "nibabel", "nilearn", "mne",
    "datalad", "lightning", "pytorch-optimizer", "transformers", "himalaya", "safetensors",
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
             verbose=not args.quiet)
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
        help="fit a TopyEncoder on a simulated brain (pyramid backbone, CPU) and report "
        "per-area scores next to the noise ceiling",
    )
    demo.add_argument("--modality", choices=("fmri", "eeg", "meg"), default="fmri",
                      help="which simulated recording to fit (default: fmri)")
    demo.add_argument("--out", default="afo_demo",
                      help="folder for the scores and figures (default: ./afo_demo)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=_demo)
    info = sub.add_parser("info", help="report the installed stack and the torch devices")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``afo-encoding`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
