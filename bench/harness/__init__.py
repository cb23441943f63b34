"""The bench/run harness: sections, process helpers and the report."""
