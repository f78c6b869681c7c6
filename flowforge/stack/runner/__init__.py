"""The warm runner `flowforge up` serves its default pool with (`docs/architecture.md`)."""
