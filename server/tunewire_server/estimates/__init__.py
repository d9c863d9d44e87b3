"""EstimateJob: what a job would read, how many steps it would take, whether it fits the server's memory
and how long it would train, answered before anything is queued.

Modules (imports point down the list; none imports torch, so the training-free worker and the control
plane share them):
    protocol    typed dataclasses across the estimate worker's pipe (request, facts, reply)
    memory      the peak-memory formula (weights, gradients, optimizer, activations, overhead)
    timing      seconds from tokens/s: measured on earlier jobs (history) or probed in the worker
    history     throughput this server measured on earlier jobs, from the store's events
    service     the control plane's side: validate, run the worker, assemble the answer

This file imports none of them: the worker imports protocol and memory only.
"""
