"""Studies built on training runs: ``wrel bench`` (profiles, runner, report, plateau check),
the scoring behind ``wrel bound`` (bound, scoring) and ``wrel bank decode`` (bank_decode)."""
