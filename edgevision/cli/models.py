from __future__ import annotations

from rich.table import Table

from edgevision import api
from edgevision.cli.common import cli_errors, console, print_json
from edgevision.cli.options import DebugOpt, JsonOpt
from edgevision.reports.render import fmt


def models_command(json_out: JsonOpt = False, debug: DebugOpt = False) -> None:
    """List the model aliases: timm name, params, GMACs at the default input size, published top-1."""
    with cli_errors(debug):
        rows = api.list_models()
        if json_out:
            print_json(rows)
            return
        table = Table(title="edgevision model aliases (any timm model name works too)")
        for col in ("alias", "timm name", "input", "params (M)", "GMACs", "ImageNet top-1"):
            table.add_column(col, no_wrap=True,
                             justify="right" if col in ("params (M)", "GMACs", "ImageNet top-1") else "left")
        for r in rows:
            top1 = f"{r.imagenet_top1:.2f} @{r.imagenet_top1_res}" if r.imagenet_top1 else "-"
            table.add_row(r.alias, r.timm_name, f"{r.img_size}px", fmt(r.params_m), fmt(r.gmacs, 3), top1)
        console().print(table)
        console().print("top-1: timm's published ImageNet-1k result for its default pretrained weights "
                        "(pretrained_tag in --json), at the resolution shown. *_mini: small widths for 32px data "
                        "(details in --json).")
