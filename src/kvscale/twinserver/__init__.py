"""`kvscale twin`: engine twins served over HTTP like vLLM. An I/O shell around `kvscale.twin`.

One process serves one or many twins, each on its own address, each with its own engine twin
driven by the wall clock (`driver`). Each speaks vLLM's OpenAI completions API (`api`) and
exports vLLM's `vllm:*` metrics with the same names, types and labels (`exposition`, pure), so
the engine sidecar and the operator treat a twin exactly like a vLLM engine. Its flags are
vLLM's (`settings`, pure), so its image (`ghcr.io/kvscale/engine-twin`) runs from the args the
operator renders for vLLM. `main` runs the server and drains it on SIGTERM.
"""
