"""privdiff's site side: the Flower SuperNode wrapper, the ClientApp, and the on-site release tool."""
