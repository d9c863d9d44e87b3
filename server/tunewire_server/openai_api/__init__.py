"""The OpenAI-compatible HTTP face: files, fine-tuning jobs, chat and text completions and models, on the
same domain layer as the gRPC servicer (JobManager, the uploaded datasets, the model listing, the inference
client), served by uvicorn in the control-plane process on its own port (`http_port`; -1 turns it off).

Modules: app (the ASGI app and its uvicorn server), auth (bearer tokens), errors (the one map from domain
errors to OpenAI's error shape), files, fine_tuning (routes) with jobs (JobSpec in, fine_tuning.job
objects out), chat (chat and text completions), models (model names and GET /v1/models).
"""
