"""The compatibility mutating admission webhook (`vgpu-dra webhook`, DESIGN §5).

Pure: `translate` (pod -> decision, shared checks), `dra` and `legacy` (the two
modes), `templates` (ask -> ResourceClaimTemplate), `selectors` (annotations ->
CEL), `facts` (slices -> card models), `podspec` (defensive pod walking),
`decision` (types, settings), `jsonpatch`, `review` (AdmissionReview wire).
I/O: `kube` (API server), `service` (one review end to end), `server` (aiohttp
HTTPS), `app` (wiring for the CLI).
"""
