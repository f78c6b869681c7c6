"""The control plane: what turns stored definitions into Prefect objects and reads runs back.

Deployments, schedules, automations, concurrency limits, work pools, and the Prefect client
wrapper that translates every Prefect failure once. The API and the CLI use it; a flow run
never does (it stands on the core and the runtime only).
"""
