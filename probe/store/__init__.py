"""SQLite storage of raw observations, written with sqlite-utils.

One database per volunteer (``results/probe.db``). Every row of one URL's measurement is
written in one transaction, the moment that URL finishes, so a run killed at any instant
loses at most the URLs in flight, and ``--resume`` measures exactly those again. Rows
are only ever inserted: a newer classifier re-reads the same observations.

Local and control observations share tables, told apart by ``side`` ('local' or
'control'), so analysis compares like with like.

The store is the only code that knows the schema or writes SQL: every other layer
calls the functions re-exported here.
"""

from probe.core.bundle import BUNDLE_VERSION, BundleError
from probe.store.browse import browse_metadata, datasette_names
from probe.store.bundles import bundle, public_run, save_bundle
from probe.store.lock import StoreInUse, lock_path, run_lock
from probe.store.observations import (
    body_head,
    connects_by_family,
    dns_failure_counts,
    download_samples,
    find_measurement_id,
    has_measurement,
    load_measurement,
    lost_controls,
    measurement_ids,
    measurement_row,
    read_measurement,
    replace_control,
    save_measurement,
    space_needed,
)
from probe.store.runs import (
    RunTarget,
    add_run_targets,
    count_targets,
    create_run,
    get_run,
    latest_unfinished_run,
    list_runs,
    mark_not_measured,
    paged_targets,
    pending_targets,
    run_exists,
    runs,
    set_run_status,
    split_run,
)
from probe.store.schema import (
    SCHEMA_VERSION,
    StoreBusy,
    StoreError,
    StoreFull,
    StoreReadOnly,
    close,
    db_file,
    ensure_views,
    free_bytes,
    open_db,
    schema_version,
    translate,
    writing,
)
from probe.store.verdicts import (
    classifier_versions,
    latest_verdict,
    report_rows,
    runs_without_verdicts,
    save_verdict_rows,
    version_key,
)

__all__ = [
    "BUNDLE_VERSION",
    "BundleError",
    "bundle",
    "public_run",
    "save_bundle",
    "browse_metadata",
    "datasette_names",
    "ensure_views",
    "translate",
    "space_needed",
    "StoreBusy",
    "StoreFull",
    "StoreInUse",
    "StoreReadOnly",
    "free_bytes",
    "lock_path",
    "run_lock",
    "writing",
    "RunTarget",
    "SCHEMA_VERSION",
    "StoreError",
    "add_run_targets",
    "body_head",
    "classifier_versions",
    "close",
    "connects_by_family",
    "count_targets",
    "create_run",
    "db_file",
    "dns_failure_counts",
    "download_samples",
    "find_measurement_id",
    "get_run",
    "has_measurement",
    "latest_unfinished_run",
    "latest_verdict",
    "list_runs",
    "load_measurement",
    "lost_controls",
    "mark_not_measured",
    "measurement_ids",
    "measurement_row",
    "open_db",
    "paged_targets",
    "pending_targets",
    "read_measurement",
    "replace_control",
    "report_rows",
    "run_exists",
    "runs",
    "runs_without_verdicts",
    "save_measurement",
    "save_verdict_rows",
    "schema_version",
    "set_run_status",
    "split_run",
    "version_key",
]
