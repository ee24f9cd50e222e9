"""The pages of runs: the dashboard (`sagactl ui`) and self-contained reports."""
