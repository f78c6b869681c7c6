"""What the routes call: validate, store, sync, call Prefect. No HTTP here but webhooks' bytes."""
