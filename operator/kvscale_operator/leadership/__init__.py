"""Leader election: one operator replica runs the handlers, the others stand by.

Pure: `lease` (the decisions over a coordination.k8s.io Lease, time as an argument). Does I/O:
`leader` (reads and writes the Lease, starts and stops kopf) and `health` (the liveness and
readiness endpoints every replica serves).
"""
