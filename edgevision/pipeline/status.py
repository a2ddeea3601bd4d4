"""A run's status, as a pure function of its report, and what to tell the user when it is not ok."""
from __future__ import annotations

from edgevision.pipeline.report import RunReport
from edgevision.pipeline.targets import get_target

OK = "ok"
MAX_DROP_NOT_MET = "max_drop_not_met"
CHECK_FAILED_EXIT = 3  # the run was written, but failed a check it was asked to pass


def run_status(report: RunReport) -> str:
    """ok, max_drop_not_met (every INT8 candidate loses more than the budget), or the target's own failed check."""
    int8 = [v for v in report.candidates() if v.is_int8]
    status = OK
    if report.max_drop is not None and int8 and all(v.drop > report.max_drop for v in int8):
        status = MAX_DROP_NOT_MET
    return get_target(report.target).check_report(report) or status


def failure_message(report: RunReport, run_dir) -> str | None:
    """The one line that explains a failed status (exit code CHECK_FAILED_EXIT), or None when ok."""
    status = report.status
    if status == OK:
        return None
    if status == MAX_DROP_NOT_MET:
        hint = get_target(report.target).max_drop_hint
        return (f"the INT8 model loses more than --max-drop {report.max_drop} points {hint}; "
                f"report written to {run_dir}")
    template = get_target(report.target).status_messages.get(status)
    if template:
        return template.format(run_dir=run_dir)
    return f"the run failed its check ({status}); see {run_dir}/report.json"
