"""The REST transport (FastAPI): routers over the runtime's core service and collections."""
