"""The local Kubernetes stack: a real control plane, a node agent and the engine environment.

What it is for: running the operator against a real kube-apiserver (with etcd,
kube-controller-manager and kube-scheduler built from Go modules) on one machine without a
container runtime, for tests, demos and development. Nodes are played by a local node agent that
runs pods as processes on loopback addresses; engines are real vLLM CPU processes.

Everything here does I/O: it starts and stops processes, writes certificates and kubeconfigs to
a state directory, and talks HTTP to the components it starts. The pure parts (certificate
building, component command lines, kubeconfig rendering) take their inputs, including the time,
as arguments and return values.
"""
