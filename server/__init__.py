"""privdiff's federation server: the Flower ServerApp and the `privdiff federation` tooling."""
