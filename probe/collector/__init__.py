"""Many vantage points in one place: the collector a researcher serves
(``server``, ``service``) and the upload a volunteer's probe makes (``client``).
See docs/collector.md for the protocol."""
