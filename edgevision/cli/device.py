"""`edgevision device`."""
from __future__ import annotations

from typing import Annotated

import typer

from edgevision import api
from edgevision.cli.common import cli_errors, console, print_json
from edgevision.cli.options import DebugOpt, JsonOpt, ThreadsOpt


def device_command(
    threads: ThreadsOpt = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Measure again instead of reading the cache.")] = False,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """This CPU for INT8: model, threads, instruction-set features, runtimes, and a measured FP32/INT8 GEMM
    roofline per runtime (a few seconds, cached per machine), with what follows in plain words."""
    with cli_errors(debug):
        profile = api.device(threads=threads, refresh=refresh)
        if json_out:
            print_json(profile)
            return
        out = console()
        out.print(f"cpu        {profile.cpu} ({profile.arch}), {profile.threads} threads")
        out.print(f"isa        {', '.join(profile.features) or 'none of ' + 'avx2/vnni/amx/dotprod'} "
                  f"(tier: {profile.tier})")
        out.print("runtimes   " + ", ".join(f"{k} {v}" for k, v in profile.versions.items()))
        for name, gops in profile.gemm_gops.items():
            out.print(f"gemm       {name:24s} {gops:8.1f} GOP/s")
        for line in profile.conclusions():
            out.print(f"so         {line}")
        out.print(f"measured   {profile.measured} in {profile.seconds} s (cached; --refresh measures again)")
