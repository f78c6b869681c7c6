"""FlowForge: workflows defined as data, compiled to Prefect flows."""

__version__ = "0.1.0"
