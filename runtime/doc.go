// Package runtime runs replicas on this machine: it starts a workload with
// exactly the GPUs its reservation names, waits until it is healthy, hands
// out its logs, stops and removes it, and finds its replicas again after a
// daemon restart. It must not choose where a replica runs (that is the
// scheduler's) nor fetch weights (the weight cache materialises a model
// directory and passes its path in Spec.ModelDir).
//
// Two backends implement Backend:
//
//   - Docker, through the Docker Engine API: the image is pulled when
//     missing (ErrImagePull when it cannot be), the container gets one GPU
//     device request naming exactly Spec.GPUUUIDs, CPU and memory limits, the
//     model directory bind-mounted read-only, its port published on
//     127.0.0.1 only, and io.shoal.* labels (owner, replica, deployment)
//     through which List finds it again.
//   - Process, for machines without Docker: the command in its own process
//     group, GPUs made visible through CUDA_VISIBLE_DEVICES, a free loopback
//     port in PORT, output in <dir>/<replica>.log and a state file
//     <dir>/<replica>.json that a restarted daemon reads; Stop signals the
//     whole group.
//
// Both hand a workload the same environment (PORT, HOST, CUDA_VISIBLE_DEVICES,
// SHOAL_VRAM_LIMIT_MIB, SHOAL_GPU_FRACTION, SHOAL_MODEL_DIR,
// SHOAL_SERVED_MODEL_NAME) and expand the same ${shoal.NAME} placeholders in
// its arguments (Placeholders), so one template serves both. A fractional
// GPU is a VRAM limit handed to the engine, as the env var and as a
// parameter (${shoal.vramLimitMiB}, ${shoal.gpuMemoryUtilization} for
// vLLM-like engines); the node's ledger does the accounting.
//
// Spec.Labels adds the caller's labels (the node adds io.shoal.pool and
// io.shoal.reservation); Spec.DeclaredGPUs marks GPUs an operator declared,
// which name no device, so the Docker backend makes no device request for
// them. Containers are never privileged nor on the host's network.
//
// StartHealthy starts and waits for health, and on any failure (exit, no
// health within the start timeout) quotes the replica's output in its error
// and removes it: nothing is left behind. Supervisor restarts a replica that
// exits, with exponential backoff, and after too many failures in a row
// gives up in a visible failed phase with the replica removed (at once for
// an invalid spec or an image that cannot be pulled). Supervisor.Adopt
// hands it a replica a restarted daemon found running: after one health
// probe it is supervised without a restart; OnPhase reports each phase
// change as it happens.
//
// Subpackage template parses the deployment templates and holds the
// built-in catalog; runtimetest builds the reference workload
// (cmd/shoal-reference) and its FROM scratch image for tests.
package runtime
