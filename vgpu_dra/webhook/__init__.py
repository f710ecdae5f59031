"""The compatibility mutating admission webhook (`vgpu-dra webhook`, DESIGN §5).

Pure: `translate` (pod -> decision, shared checks), `dra` and `legacy` (the two
modes), `templates` (ask -> ResourceClaimTemplate), `selectors` (annotations ->
CEL), `facts` (slices -> card models), `podspec` (defensive pod walking),
`decision` (types, settings), `limits` (what is checked before anything is
created), `jsonpatch`, `review` (AdmissionReview wire).
I/O: `kube` (API server: templates, their sweep, slices), `service` (one review end
to end), `server` (routes on `vgpu_dra.serving.https`, and the sweep's schedule),
`app` (wiring for the CLI).
"""
