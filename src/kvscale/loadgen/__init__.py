"""The demo's load generator: replay a request trace against the engine pods of one
InferenceDeployment, route like an inference gateway, and record what the deployment did.

Pod IPs cannot back Services on the local stack, so the generator sends each request straight
to a ready engine pod, picking the least-loaded one as an inference gateway's endpoint picker
would. Alongside, it watches the pods, their sidecars' occupancy reports and the operator's
scaling decisions once a second, and keeps a timeline of all of it for the live display, the
summary and the plot.

Pure (no I/O, time passed in): `view` (pods, reports and the resource as the generator sees
them, parsed from API documents), `router` (which pod gets the next request), `workload` (a
trace slice turned into the requests to send), `timeline` (the per-second record and its
summary), `progress` (the live line).
I/O shells: `replayer` (sends the requests over HTTP, aiohttp), `watcher` (reads pods, the
resource, Events and sidecar reports: lightkube and aiohttp), `plot` (writes the PNG,
matplotlib).
"""
