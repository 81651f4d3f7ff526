"""The command lines of tune/: `python tune/search_noise.py` and `python tune/study.py` are thin wrappers of
`search_noise.main` and `study.main` here; `common.py` holds what every one of them parses (the runner's
resources, cluster, early stopping and --dry-run: `add_runner_arguments`)."""
