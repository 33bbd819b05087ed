"""OONI web_connectivity measurements in and out of our records.

Why: OONI has years of measurements from Belarus and elsewhere, and labelled simulated
ones (tests/data/ooni) that are ground truth for our classifier. Importing them turns
each into the same rows the probe writes, so ``analysis/`` judges OONI's observations
and ours with the same rules. Exporting ours as OONI documents lets OONI's tools (and
researchers used to them) read what our volunteers saw.

Only observations cross over. OONI's verdict keys (``blocking``, ``accessible``,
``dns_consistency``, ``*_match``) are analysis, not observation: they are neither
imported nor written (exported as null).

Mapping rules, in one place:

* Failure strings go through ``failures.OONI_NAMES`` both ways. Importing also knows the
  test helper's and MK-era legacy strings whose meaning is exactly one of ours
  (``dns_name_error`` is NXDOMAIN); any other string is kept as ``unknown_failure: <it>``
  rather than guessed.
* OONI times are seconds (``t0``, ``t``) since ``measurement_start_time``; ours are ISO
  instants and milliseconds. Both are converted through whole microseconds, so a round
  trip is exact.
* Export writes OONI's own fields, and then imports the result in memory: whatever an
  import would not get back the same (our TLS failure stage, a redirect hop's reason, a
  failure OONI's vocabulary merges, ...) is written into the record's ``tags`` as
  ``bynet:<field>=<JSON>`` (measurement-level ones into ``annotations`` as
  ``bynet_<field>``). OONI's tools ignore tags they do not know; our import reads them
  back, so our own exports round-trip without loss. The exception is the control:
  OONI's THResponse holds one DNS answer set, one result per endpoint and the final HTTP
  response, without timings, and we keep to that shape (our helper's own answer, kept in
  ``ControlResult.raw``, is not exported). A control imported from OONI is exported as
  it came.
"""
