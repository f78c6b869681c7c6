"""Connectors: how FlowForge reaches the world outside a flow run's own process.

SSH connections (host keys verified, bounded in time, circuit-broken), where server records
live, and Prefect variables as a store. Both the runtime (a job connecting) and the API (a
server test, a record written) use them, as Airflow's operators and its UI's "test connection"
share a provider's hook; they stand on the core only.
"""
