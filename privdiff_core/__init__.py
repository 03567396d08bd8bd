"""privdiff_core: everything that is machine learning in privdiff, and nothing that is Flower.

The federated server and site client, the simulation and the release tool all call this
package; it never imports them back.
"""

__version__ = "0.1.0"
