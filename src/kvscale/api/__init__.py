"""The InferenceDeployment API: typed models and the CRD generated from them. Pure: no I/O.

The models here are the one source of truth for the resource's shape. The operator parses
objects from the API server with them, and `crd.render_yaml()` turns them into the checked-in
CRD under `crds/` (a test fails when the two drift apart).
"""
