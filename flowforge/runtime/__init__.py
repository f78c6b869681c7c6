"""What runs inside a flow run: the job tasks, the gate applied, job kinds and executors.

Generated flows import only `flowforge.runtime.run`. Nothing here imports the API, the control
plane, SQLModel or FastAPI, so a worker needs neither the FlowForge database nor its API:
everything a flow run needs is in the generated files, its parameters and Prefect.
"""
