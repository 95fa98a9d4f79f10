"""The chaos harness, short: one fault of each kind per delivery mode, then the strict proof.

The same harness as ``make chaos`` (50 cycles per mode), with five cycles: SIGKILL of
cdc-service, of bronze-writer, of both, of the Kafka broker (restarted on the same storage
and port) and a broker pause past the producer's delivery timeout, in a seeded random order
(``CHAOS_SEED`` repeats one). It passes only when every write is in bronze exactly once,
bronze's replay and silver (after a dbt build) equal MongoDB document by document, and no
service exited on its own, in both delivery modes.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from rich.console import Console

from chaos.faults import Victim
from chaos.run import ChaosRun
from chaos.settings import ChaosSettings
from lakehouse_common.lifecycle import ExitCode
from lakehouse_common.settings import load_settings

pytestmark = pytest.mark.timeout(1200)


def _findings(result: dict) -> str:
    lines = [f"seed {result['seed']} (CHAOS_SEED={result['seed']} repeats it); result in {result.get('file')}"]
    for name, mode in result["modes"].items():
        lines.append(
            f"{name}: writes {mode['writes']}, lost {mode['lost']}, duplicated {mode['duplicated']}, "
            f"unexpected {mode['unexpected']}, state mismatches {mode['state_mismatches_by_layer']}, "
            f"unexpected exits {[(e['service'], e['exit_code']) for e in mode['unexpected_exits']]}, "
            f"dbt exit {mode['dbt_exit_code']}"
        )
        for exit_ in mode["unexpected_exits"]:
            lines.append(f"  {exit_['service']} exited {exit_['exit_code']} (cycle {exit_['cycle']}), log {exit_['log']}:")
            lines.append("    " + exit_["log_tail"].replace("\n", "\n    ")[-1500:])
        diagnosis = mode["details"].get("diagnosis")
        if diagnosis:
            lines.append(f"  diagnosis: {json.dumps(diagnosis)[:2000]}")
    return "\n".join(lines)


def test_short_chaos_run_loses_nothing_in_either_delivery_mode(run_dir: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1_000_000)))
    settings = load_settings(
        ChaosSettings,
        work_dir=run_dir / "chaos",
        cycles=len(Victim),
        seed=seed,
        seed_documents=50,
        dwell_min_seconds=0.5,
        dwell_max_seconds=2.0,
        down_max_seconds=1.0,
    )
    code = ChaosRun(settings, Console(width=160)).run()
    result = json.loads(settings.result_file.read_text())
    result["file"] = str(settings.result_file)
    assert code == ExitCode.OK, _findings(result)
    assert set(result["modes"]) == {"at_least_once", "exactly_once"}
    for mode in result["modes"].values():
        assert mode["cycles"] == len(Victim)
        assert mode["kills"] == dict.fromkeys((victim.value for victim in Victim), 1)
        assert mode["writes"] > 0
        assert (mode["lost"], mode["duplicated"], mode["state_mismatches"]) == (0, 0, 0), _findings(result)
        assert mode["state_mismatches_by_layer"]["silver"] == 0
