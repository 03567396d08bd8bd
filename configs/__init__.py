"""The experiment configs (YAML), installed as package data of `privdiff.configs`."""
