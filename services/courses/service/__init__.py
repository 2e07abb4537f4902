"""The use cases of courses, one module per resource as in `routes/`: the rules, the
permissions and the events each change records. They flush, never commit: the request's
unit of work (`SessionDep`) or the consumer's commits."""
