"""Models out: checkpoint listing, download manifests and chunk reading, merged forms, deletion, retention.

Control plane only: nothing here imports torch, transformers, peft or grpc (the merge itself runs in a worker
process, worker/merge/). The servicer talks to `service.ModelService`; the modules, one idea each:

    layout      where a job's artifacts are (JobFolder), Which (final | checkpoint N), Form (as trained | merged)
    selection   which files a download sends (what from_pretrained needs) and which it leaves out, and why
    verified    a folder's files as its verified completeness marker records them (cached verification)
    listing     ListCheckpoints: complete checkpoints with step, epoch, time, sizes, eval metrics; the final model
    manifest    what a download sends (path, size, sha256 per file) and the refusals
    reader      chunks of a manifest's files from an offset, bounded, never outside the folder
    merge       the merged form of a LoRA adapter, computed once in a merge worker, kept as a complete unit
    deletion    removal by rename-to-trash, then delete
    retention   which checkpoints a succeeded job keeps, TTL of terminal jobs' artifacts, and applying both
    service     ModelService: the API the servicer uses
    removal     DeleteJob: artifacts and cache entry, then the job's events and record
    sweeper     when retention runs: after a job succeeds, and periodically with a TTL
"""
