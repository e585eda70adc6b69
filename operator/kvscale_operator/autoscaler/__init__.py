"""The autoscaler: one gather -> decide -> act loop per InferenceDeployment.

Does I/O: `autoscale` (the loops: pods, reports, the pure decision of `kvscale.scaling`, the
replicas patch, Events, metrics, status) and `collector` (the sidecars' reports over HTTP).
Pure: `observation` (Pod objects as the decision sees them; `kvscale.adapter` pairs them with
reports), `sampling` (which sidecars to ask), `inventory` (each deployment's pods from the
pod watch) and `outcome` (the autoscaler's status fields and conditions).
"""
