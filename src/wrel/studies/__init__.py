"""`wrel bench`: the WREL result table (methods x accurate ratios x seeds), its report and plots."""
