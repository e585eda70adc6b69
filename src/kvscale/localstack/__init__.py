"""The local Kubernetes stack: a real control plane, a real node and the engine environment.

What it is for: running the operator against a real kube-apiserver (with etcd,
kube-controller-manager and kube-scheduler built from Go modules) and a real node (kubelet and
kube-proxy from Go modules, containerd, runc and CNI from Debian's packages, inside a network
namespace of the stack's own) on one machine, for tests, demos and development; engines are real
vLLM CPU containers or engine twins, from images built here.

Everything here does I/O: it starts and stops processes, writes certificates and kubeconfigs to
a state directory, and talks HTTP to the components it starts. The pure parts (certificate
building, component command lines, kubeconfig rendering) take their inputs, including the time,
as arguments and return values.
"""
