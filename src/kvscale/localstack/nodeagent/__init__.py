"""The local node agent: a stand-in for kubelet and a container runtime. Does I/O.

What it is for: there is no kubelet or container runtime on the development machines, so this
agent plays one. It registers Node objects (with fake `nvidia.com/gpu` capacity) with a real
kube-apiserver, keeps them Ready with Lease renewals and status heartbeats, watches the pods the
scheduler binds to them and runs every container as a local process group on the pod's own
loopback address. It reports pod status like kubelet (IPs, phase, container states, probes,
conditions), restarts containers per restart policy with kubelet's crash-loop backoff, and on
deletion runs preStop hooks, sends SIGTERM, waits the grace period, sends SIGKILL and removes the
pod object.

Images are mapped to local commands by one explicit table (`images`). Container output goes to
`<state-dir>/pods/<namespace>_<pod>_<uid>/<container>.log` (appended across restarts, kept after
the pod is deleted); the process records used to find orphans after an agent restart live next
to the logs as `<container>.pid`.

Pure modules (no I/O, time passed in): `podspec` (pod JSON -> typed spec), `expansion`
(`$(VAR)`), `environment` (a container's env), `images` (image -> command), `ipam` (pod IPs),
`backoff` (crash-loop schedule), `probe` (probe results -> ready state), `status` (pod status
from container states), `settings`. I/O shells: `process`, `action`, `state`, `container`,
`pod`, `node`, `agent`, `main`; `testbox` is a tiny HTTP server the tests run as an image.
"""
