"""The local stack and the command line, on top of everything else: Prefect, alisim and the
relay started on this machine (`runbooks demo`, `runbooks up`, the tests and benchmarks), and
`runbooks`. The core (`alicloud_runbooks`) never imports this package, the flows, the
deployments or alisim."""
