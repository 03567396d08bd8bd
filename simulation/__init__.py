"""A whole federation of synthetic hospitals on one machine: `privdiff simulate`."""
