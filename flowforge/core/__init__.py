"""The core: the workflow model, its validation, templates, the run-if gate and the wire schema.

Everything else stands on this layer and it stands on nothing of FlowForge's: no Prefect, no
FastAPI, no database, no Docker or SSH. The API validates a document with it, the compiler
reads it, a flow run evaluates its gate and templates with it, and the worker and the API
agree through its wire schema (`wire.RunSummary`).
"""
