"""The stack `flowforge up` runs: a Prefect server, workers and the API, supervised.

On top of every other layer: it starts the processes the others run in, creates the work
pools (control plane) and reaps what killed workers left (the runtime's executors).
"""
