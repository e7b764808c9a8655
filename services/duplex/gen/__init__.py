"""Generated gRPC code (make proto). Never edit; only the worker servicer and the orchestrator worker client import it."""
