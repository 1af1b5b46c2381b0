// Package template parses, validates and renders deployment templates: YAML
// documents that say what a deployment runs, with typed parameters.
//
//	apiVersion: shoal/v1
//	kind: Template
//	metadata:
//	  name: vllm                     # lowercase letters, digits, dashes
//	  description: ...
//	parameters:                      # set with --set name=value
//	  - name: model
//	    type: string                 # string, int, float, bool or enum (with enum: [...])
//	    required: true               # or default: "..."
//	spec:
//	  kind: service                  # service, job or gang
//	  priority: inference            # inference (default for services) or batch
//	  resources: {gpus: 1, gpuFraction: 0.5, minVRAM: 16GiB, arch: [ampere], cpu: 4, memory: 32GiB}
//	  runtime:                       # service and job; a gang has one per role under gang.roles
//	    image: vllm/vllm-openai:v0.10.1   # Docker backend
//	    entrypoint: [...]            # optional, replaces the image's entrypoint
//	    command: [vllm, serve]       # process backend
//	    args: [--port, "${shoal.port}", --max-model-len, "${maxModelLen}"]
//	    env: {NAME: value}
//	    port: 8000                   # 0: no HTTP endpoint (healthy once running)
//	    health: /health
//	    startTimeout: 20m
//	  weights: {model: "${model}", mountPath: /models}
//	  scaling: {minReplicas: 0, maxReplicas: 2, targetConcurrency: 16, idleTimeout: 15m}
//	  gang: {placement: best-connected, split: vram, roles: [{name, count, resources, runtime}]}
//
// # Substitution
//
// In spec values, ${name} is replaced by the parameter's value (as typed on
// the command line, after its type was checked) when the template is
// rendered; $${ writes a literal ${. ${shoal.version} is the binary's
// version. Every other ${shoal.NAME} placeholder (runtime.Placeholders,
// GangPlaceholders) stays in the rendered spec and is filled where the
// replica runs: the backend knows the port and the model directory, the gang
// coordinator knows the ranks and peers. A reference to anything else is an
// error at parse time.
//
// # Errors
//
// Parse and Render return *Error, which names the template, the line (for
// mistakes in the YAML) and the field, and wraps a sentinel (ErrUnknownField,
// ErrType, ErrRequired, ErrValue, ErrUnknownParam, ErrUnknownTemplate,
// ErrSyntax) for errors.Is.
//
// The built-in catalog (Builtin) is embedded from catalog/*.yaml.
package template
