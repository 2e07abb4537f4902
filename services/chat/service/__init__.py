"""Chat's use cases: each module is called by its namesake in `routes/`."""
