"""Code that runs in worker child processes: training (one job per process) and inference."""
