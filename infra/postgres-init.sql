-- The Prefect server's database beside FlowForge's (POSTGRES_DB creates `flowforge`).
CREATE DATABASE prefect OWNER flowforge;
