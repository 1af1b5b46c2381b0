// Package sim replays a GPU cluster trace through the scheduler's placement,
// the way the simulator of the FGD paper (Weng et al., USENIX ATC 2023)
// does, so that packing figures compare with the published ones. It reads
// the CSV layout of Alibaba's cluster-trace-gpu-v2023 (ReadNodes, ReadPods,
// with errors naming file, line and column), builds each seed's arrival
// list (Arrivals) and replays it (Replay) into a Result: arrived against
// allocated GPU share, and the unallocated percent at 100, 110 and 130
// percent arrived.
//
// It calls the same scheduler.Pool the live pool uses and owns no policy of
// its own. It reads files only in ReadNodesFile and ReadPodsFile, and does
// not depend on cmd.
package sim
