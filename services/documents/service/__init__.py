"""The use cases of documents: the rules, the ownership checks and the events each change
records. They flush, never commit: the request's unit of work (`SessionDep`) or the
processor's commits."""
