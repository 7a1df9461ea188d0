"""Write docs/cli.md from the command line itself (every command, argument and flag, as `--help`
shows them), so the reference cannot drift from the code.

    .venv/bin/python docs/gen_cli.py > docs/cli.md
"""

from __future__ import annotations

from typing import Any

import typer

from latentad.cli import app

INTRO = """# Command-line reference

Generated from the code by `.venv/bin/python docs/gen_cli.py > docs/cli.md`; `latentad COMMAND --help`
prints the same. Every flag can also be given as `--flag=value`. Errors in the input end a command
with one line on stderr naming the file or key and the problem, exit code 2 (`LATENTAD_DEBUG=1` shows
the traceback). Guides: [README](../README.md), [deployment](deployment.md), the method pages
([reconstruction](reconstruction.md), [pretrained](pretrained.md), [self-supervised](selfsupervised.md)),
[data](data.md) and [benchmarks](benchmarking.md).
"""

NOTES = """## How the commands behave

- `fit` reads an MVTec-layout folder by default; other formats with `--format` (`folder`, `mnist`,
  `cifar10`, `elpv`, `ucsd`, `synthetic`) and `--data-option key=value` (e.g. `-d normal_class=3`).
  Method options: `--option key=value` (e.g. `-o image_size=256`, `-o augment_to=null`). A value is
  read as the type its target declares (a config field, or the loader's parameter); every option is
  checked before any work starts (unknown key, wrong type, value out of range or not among the
  allowed ones: one line naming the key, the value and what is allowed, exit 2). Data with other
  channels than the configured `channels` are converted (BT.601 luma for colour to grey), with a
  warning naming them. `--config FILE` reads the same keys from a TOML file; flags on the command
  line win. `--resume` continues a killed training from its last checkpoint (same result as
  uninterrupted); a resume with other settings than the checkpoint's is refused, naming each changed
  field with its old and new value.
- `evaluate --json` prints one JSON object (`image_auroc`, `pixel_auroc` (null without masks),
  `aupro`, `aupimo`, `f1_max`, `at_threshold`, `n_images`, `seconds`) and writes `RUN/metrics.json`,
  `RUN/scores.csv` (with each anomalous image's own AUPIMO when the data have masks), heat-map
  overlays in `RUN/maps/` and `RUN/report.html`. `metrics.json` also holds the metrics per defect type
  and their `conditions`: the resolution of the pixel metrics (`--eval-size` resizes maps and masks so
  detectors of different input sizes compare at one resolution), AUPRO's FPR limit, AUPIMO's FPR
  range. `at_threshold` is what the calibrated threshold achieves on the test set; `f1_max` chooses
  its threshold with the test labels (docs/deployment.md).
- `predict`, `calibrate`, `export`, `serve`: docs/deployment.md. `analyze`: docs/ANALYSIS.md.
  `benchmark`: docs/benchmarking.md. `list`: each method's family and presets. `demo`: the README.
- Bad input (corrupt / truncated / empty image, empty `train/good`, non-image file, a mask whose size
  differs from its image, a missing mask folder) ends with one line naming the file, exit code 2.
  A grayscale image among RGB ones is converted to RGB, with a warning naming it.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(p: Any) -> str:
    if p.default is None or (isinstance(p.default, (list, tuple)) and not p.default):
        return ""
    if _is_option(p) and p.is_flag:
        return (f"`{p.opts[0]}`" if p.default else f"`{p.secondary_opts[0]}`") if p.secondary_opts else ""
    return f"`{p.default}`"


def _is_option(p: Any) -> bool:  # typer carries its own click: compare by kind, not by class
    return getattr(p, "param_type_name", "") == "option"


def _arg_name(a: Any) -> str:
    return (a.metavar or a.name).upper() + ("..." if a.nargs == -1 else "")


def _flags(p: Any) -> str:
    names = sorted(p.opts, key=len, reverse=True) + p.secondary_opts
    return ", ".join(f"`{n}`" for n in names)


def command_section(name: str, cmd: Any, ctx: Any) -> list[str]:
    lines = [f"## `latentad {name}`", ""]
    if cmd.help:
        lines += [_cell(cmd.help.split("\n\n")[0]), ""]
    args = [p for p in cmd.params if getattr(p, "param_type_name", "") == "argument"]
    opts = [p for p in cmd.params if _is_option(p) and not p.hidden and p.name != "help"]
    old = [p for p in cmd.params if _is_option(p) and p.hidden]
    usage = " ".join(["[OPTIONS]"] + [_arg_name(a) if a.required else f"[{_arg_name(a)}]" for a in args])
    lines += [f"Usage: `latentad {name} {usage}`", ""]
    if args:
        lines += ["| argument | meaning |", "|---|---|"]
        lines += [f"| `{_arg_name(a)}` | {_cell(a.help or '')} |" for a in args]
        lines.append("")
    if opts:
        lines += ["| flag | meaning | default |", "|---|---|---|"]
        lines += [f"| {_flags(o)} | {_cell(o.help or '')} | {_default(o)} |" for o in opts]
        lines.append("")
    if old:
        lines += ["Deprecated spellings, still accepted for one release: "
                  + "; ".join(f"{_flags(o)} ({_cell(o.help or '')})" for o in old) + ".", ""]
    return lines


def main() -> None:
    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="latentad")
    lines = [INTRO, "## `latentad`", ""]
    top = [p for p in root.params if _is_option(p) and not p.hidden and p.name != "help"]
    if top:
        lines += ["| flag | meaning |", "|---|---|"] + [f"| {_flags(o)} | {_cell(o.help or '')} |" for o in top]
        lines.append("")
    for name in root.list_commands(ctx):
        lines += command_section(name, root.get_command(ctx, name), ctx)
    lines.append(NOTES)
    print("\n".join(lines).rstrip())


if __name__ == "__main__":
    main()
