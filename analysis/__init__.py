"""Turns stored observations into verdicts (issue 3). Imports flow one way:
probe (measure) -> probe.store -> analysis -> reports."""
