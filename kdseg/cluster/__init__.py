"""Ray cluster jobs: submit a sweep, follow its status and logs."""
