package node

import (
	"bufio"
	"bytes"
	"encoding/json"
	"testing"

	"github.com/shoalmesh/shoal/scheduler"
	"github.com/shoalmesh/shoal/scheduler/coordinator"
)

// FuzzDeployMessage: a deployment push (/shoal/deploy/1.0.0) as the
// handler reads it: no input panics the frame reader, the decoder or the
// store's merge, and merging what was accepted a second time changes
// nothing (the merge is idempotent, so a replayed push is harmless).
func FuzzDeployMessage(f *testing.F) {
	src := coordinator.NewStore("peer-a")
	src.Put("ref", coordinator.Spec{Name: "ref", Request: scheduler.Request{GPUs: 1, MilliGPU: 500, Replicas: 2}})
	src.Put("gang", coordinator.Spec{Name: "gang", Request: scheduler.Request{GPUs: 1, Replicas: 4, Gang: true}})
	for _, msg := range []deployMessage{{Records: src.List()}, {}} {
		var buf bytes.Buffer
		_ = writeFrame(&buf, msg)
		f.Add(buf.Bytes())
	}
	f.Add([]byte{0x02, '{', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := readFrame(bufio.NewReader(bytes.NewReader(b)), maxDeployBytes)
		if err != nil {
			return
		}
		var msg deployMessage
		if json.Unmarshal(body, &msg) != nil {
			return
		}
		st := coordinator.NewStore("peer-b")
		for _, r := range msg.Records {
			_, _ = st.Merge(r)
		}
		for _, r := range st.List() {
			if changed, err := st.Merge(r); changed || err != nil {
				t.Fatalf("merging accepted record %q again = %v, %v; want no change", r.ID, changed, err)
			}
		}
	})
}

// FuzzServeReport: a serving report (/shoal/serve/1.0.0) as the handler
// reads it: no input panics the frame reader or the decoder, and what is
// accepted encodes again.
func FuzzServeReport(f *testing.F) {
	for _, rep := range []serveReport{
		{Replicas: []ReplicaRun{{Reservation: "r#0/1", ID: "x", Deployment: "ref", State: PhaseReady, GPUs: []string{"GPU-a"}, InFlight: 2}},
			IdleMillis: map[string]int64{"ref": 1500}, Waiting: map[string]int{"ref": 3}},
		{},
	} {
		var buf bytes.Buffer
		_ = writeFrame(&buf, rep)
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := readFrame(bufio.NewReader(bytes.NewReader(b)), maxReportBytes)
		if err != nil {
			return
		}
		var rep serveReport
		if json.Unmarshal(body, &rep) != nil {
			return
		}
		if _, err := json.Marshal(rep); err != nil {
			t.Fatalf("an accepted report does not encode: %v", err)
		}
	})
}

// FuzzDecodeAnswer: a node's answer to a reservation call, as the
// coordinator's transport reads it: no input panics the frame reader or
// the decoder.
func FuzzDecodeAnswer(f *testing.F) {
	for _, a := range []coordinator.Answer{
		{Refused: &coordinator.Refused{Resource: "gpu", GPU: "GPU-a", Want: 500, Free: 200}},
		{Evicted: []string{"b#0/1"}, Unknown: []string{"c"}},
		{},
	} {
		var buf bytes.Buffer
		_ = writeFrame(&buf, a)
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := readFrame(bufio.NewReader(bytes.NewReader(b)), maxAnswerBytes)
		if err != nil {
			return
		}
		a, err := decodeAnswer(body)
		if err != nil {
			return
		}
		if _, err := json.Marshal(a); err != nil {
			t.Fatalf("an accepted answer does not encode: %v", err)
		}
	})
}
