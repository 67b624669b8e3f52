"""The ``simlab`` command line (also ``python -m simlab``): the parser of every command and its
options, and ``main``, which turns the errors a user can fix into one line and exit code 2.
The commands themselves are in :mod:`simlab.commands`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from . import commands
from .checkpoint_io import CheckpointError
from .config import ConfigError
from .dataset_base import DatasetNotFound
from .image_files import BadImageError
from .notebook_params import ParameterError
from .run_start import check_run_folder


# commands whose --out is a run folder (the others write one file there)
_RUN_FOLDER_COMMANDS = ("demo", "pretrain", "finetune", "notebook", "sweep")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .notebook_params import NOTEBOOK_DIR
    parser = argparse.ArgumentParser(prog="simlab", description="Siamese Image Modeling workbench")
    parser.add_argument("--version", action="version", version=f"simlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    from .presets import preset
    p = sub.add_parser("demo", help="the main job on the embedded dataset: view figures, then the notebooks "
                                    "01 -> 04 (a short SiM pretraining, its dense features, probes)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--data-root", default=None,
                   help="folder holding Fashion-MNIST's IDX files, used only for the one optional Fashion-MNIST "
                        "view-pair figure when Debian's dataset-fashion-mnist is not installed (the demo "
                        "itself runs on the embedded shapes dataset)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"pretraining steps (default: the demo preset's {preset('demo').train.steps}; 0 skips "
                        "training and looks at the shipped checkpoint)")
    p.add_argument("--figures-only", action="store_true", help="draw the static view figures, run no notebook")
    p.set_defaults(func=commands.demo_command)

    from .presets import PRESETS
    p = sub.add_parser("pretrain", help="pretrain SiM; re-running the same command resumes")
    start = p.add_mutually_exclusive_group(required=True)
    start.add_argument("--preset", choices=list(PRESETS), help="starting configuration")
    start.add_argument("--config", metavar="RUN/config.json",
                       help="relaunch a run from its saved config.json (then --set and the options below change it)")
    p.add_argument("--out", required=True, help="run folder (config, metrics, checkpoints)")
    p.add_argument("--dataset", help="override the preset's dataset")
    p.add_argument("--data-root", help="folder of the dataset")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="train this many epochs")
    length.add_argument("--steps", type=int, help="train this many optimizer steps")
    p.add_argument("--seed", type=int,
                   help="run seed: initial weights, augmentations and masks (default: the preset's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any config field, e.g. --set neg_weight=0.05 (repeatable)")
    p.set_defaults(func=commands.pretrain_command)

    p = sub.add_parser("export", help="write a checkpoint's weights for sharing or for other toolkits")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or run folder (its newest valid checkpoint)")
    p.add_argument("--out", required=True, help="file to write (an existing one is replaced only with --force)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    p.add_argument("--format", choices=("simlab", "timm", "checkpoint"), default="simlab",
                   help="simlab: encoder weights as safetensors; timm: the encoder as safetensors with timm "
                        "VisionTransformer names (global_pool='avg'), for ViTDet and mmsegmentation; "
                        "checkpoint: the whole model without optimizer state, for sharing")
    p.set_defaults(func=commands.export_command)

    from .finetune_recipe import FINETUNE_PRESETS
    p = sub.add_parser("finetune", help="fine-tune a checkpoint's encoder end to end for classification "
                                        "(the paper's protocol, scaled by preset); re-running resumes")
    p.add_argument("--checkpoint", default=None, help="checkpoint or run folder (default: the shipped demo one)")
    p.add_argument("--out", required=True, help="run folder (config, metrics, checkpoints, results.json)")
    p.add_argument("--preset", default="demo", choices=list(FINETUNE_PRESETS),
                   help="paper: the official ImageNet recipe; demo: a few CPU minutes; tiny: tests")
    p.add_argument("--dataset", help="labelled dataset (default: the checkpoint's pretraining dataset)")
    p.add_argument("--data-root", help="folder of that dataset")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=float, help="fine-tune this many epochs (default: the preset's)")
    length.add_argument("--steps", type=int, help="fine-tune this many optimizer steps")
    p.add_argument("--seed", type=int, help="fine-tuning seed: head, augmentations, mixup (default: the preset's)")
    p.add_argument("--random-init", type=int, metavar="SEED",
                   help="fine-tune a freshly initialised encoder of the same architecture (the baseline)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a fine-tuning field (repeatable)")
    p.set_defaults(func=commands.finetune_command)

    p = sub.add_parser("import-official", help="turn the official SiM release (e.g. sim_base_1600ep_pretrain.pth, "
                                               "downloaded by you) into a simlab checkpoint")
    p.add_argument("--checkpoint", required=True, help="the official .pth file")
    p.add_argument("--out", required=True, help="the simlab checkpoint to write")
    p.add_argument("--num-heads", type=int, help="encoder heads (default: from the file's args.model)")
    p.add_argument("--decoder-heads", type=int, help="decoder heads (default: from the file's args.model)")
    p.set_defaults(func=commands.import_official_command)

    p = sub.add_parser("notebook", help="execute notebooks/NAME.ipynb with papermill into RUN_DIR/NAME.ipynb")
    shipped = sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb"))
    p.add_argument("name", help=f"which notebook: {', '.join(shipped)}")
    p.add_argument("--out", required=True, help="run folder (training the notebook starts goes to OUT/train)")
    p.add_argument("-p", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a parameter (Python literal, true/false, or a bare string); repeatable")
    p.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3, this interpreter's)")
    p.add_argument("--quiet", action="store_true",
                   help="print nothing while it runs (what the cells print still goes to OUT/NAME.log)")
    p.set_defaults(func=commands.notebook_command)

    p = sub.add_parser("probe", help="k-NN, linear, few-shot and dense probes of a checkpoint's frozen encoder")
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or run folder (its newest valid checkpoint)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--train-size", type=int, default=10_000, help="labelled train images (default 10000)")
    p.add_argument("--test-size", type=int, default=2_000, help="test images (default 2000)")
    p.add_argument("--dataset", default=None, help="labelled dataset to probe on (default: the pretraining one)")
    p.add_argument("--data-root", default=None, help="folder of that dataset")
    p.add_argument("--random-init", type=int, metavar="SEED",
                   help="probe a freshly initialised encoder of the checkpoint's architecture instead")
    p.add_argument("--pool", choices=("mean", "cls"), default="mean",
                   help="global feature: mean of the patch tokens (default) or the cls token")
    p.add_argument("--dense-pairs", type=int, default=512,
                   help="held-out view pairs on which a SiM decoder is scored beside its content-blind "
                        "floor (default 512; 0 skips it)")
    p.add_argument("--json", action="store_true", help="print the JSON instead of the table")
    p.set_defaults(func=commands.probe_command)

    p = sub.add_parser("runs", help="list run folders: preset, changed fields, status, steps, last metrics, probes")
    p.add_argument("paths", nargs="*", help="run folders or folders of them (default: runs)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON list of records")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    p.set_defaults(func=commands.runs_command)

    p = sub.add_parser("compare", help="overlay runs' metrics curves in one figure and print their probes")
    p.add_argument("runs", nargs="+", help="run folders (or folders of them)")
    p.add_argument("--out", default="compare.png", help="the figure (default: compare.png)")
    p.add_argument("--keys", help="comma-separated metrics to draw (default: loss, knn, target_var_position, "
                                  "encoder_rankme, pos, neg)")
    p.set_defaults(func=commands.compare_command)

    p = sub.add_parser("sweep", help="train the product of config values and seeds, each point in its own run "
                                     "folder; rerunning resumes and skips finished points")
    p.add_argument("--out", required=True, help="sweep folder (one run folder per point, sweep.json/csv/png)")
    p.add_argument("--preset", choices=list(PRESETS), help="starting configuration of every point")
    p.add_argument("--grid", action="append", metavar="KEY=V1,V2",
                   help="a config field and its values (repeatable; use | between values that hold commas)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds of every grid point (default: 0)")
    p.add_argument("--steps", type=int, help="steps of every point (default: the preset's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a fixed override for every point")
    p.add_argument("--spec", help="a JSON (or YAML) file with preset, grid, seeds, steps, overrides, probe, via")
    p.add_argument("--workers", type=int, default=1, help="points trained at once (CPU threads split between them)")
    p.add_argument("--probe", action="store_true", help="probe every finished point into RUN/probe.json")
    p.add_argument("--probe-train", type=int, default=5000, help="labelled train images of each probe")
    p.add_argument("--probe-test", type=int, default=1000, help="test images of each probe")
    p.add_argument("--via", choices=("cli", "notebook"), default="cli",
                   help="cli: simlab pretrain per point; notebook: 02_pretrain through papermill per point")
    p.set_defaults(func=commands.sweep_command)

    p = sub.add_parser("verify-data", help="decode every image of a dataset and list the files that do not "
                                           "(the ones a run skips, or stops at with --set on_bad_image=fail)")
    p.add_argument("--dataset", required=True, help="dataset name, e.g. imagefolder, cifar10, fashion-mnist")
    p.add_argument("--data-root", default=None, help="folder of the dataset")
    p.add_argument("--split", default="train", help="train (default), test, or unlabeled for stl10")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands.verify_data_command)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    func = args.func
    if "TORCHELASTIC_RUN_ID" in os.environ:
        # under torchrun: a rank's uncaught exception is written where the agent reports it
        # (the failing rank's traceback appears in torchrun's summary)
        from torch.distributed.elastic.multiprocessing.errors import record
        func = record(func)
    try:
        if args.command in _RUN_FOLDER_COMMANDS:
            check_run_folder(args.out)  # before anything is built: --out naming a file is a one-line error
        return func(args)
    except (ConfigError, DatasetNotFound, CheckpointError, ParameterError, BadImageError) as e:
        print(f"simlab {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training loop: no traceback
        print(f"simlab {args.command}: interrupted", file=sys.stderr)
        return 130
