package weightcache

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A mapped chunk whose file is cut short underneath faults when it is
// read; the session gets an error and the daemon lives on.
func TestMappedChunkFaultIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "blob")
	data := randBytes(3, 2<<20)
	writeFile(t, p, data)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mm, err := mapFile(f, int64(len(data)))
	if err != nil || mm == nil {
		t.Skipf("no file mapping on this platform (%v)", err)
	}
	defer unmapFile(mm)
	var out bytes.Buffer
	if err := writeFrameMapped(&out, frData, 1, mm[1<<20:]); err != nil {
		t.Fatalf("intact mapping: %v", err)
	}
	if !bytes.Equal(out.Bytes()[frameHeaderLen:], data[1<<20:]) {
		t.Fatal("the frame does not carry the mapped bytes")
	}
	if err := os.Truncate(p, 0); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err = writeFrameMapped(&out, frData, 1, mm[1<<20:])
	if err == nil || !strings.Contains(err.Error(), "fault reading") {
		t.Fatalf("reading a mapping past the file's end = %v; want a fault error", err)
	}
}

// Held chunks, of a complete model or of a download in progress, are
// handed out of the mapping; a chunk not held is not.
func TestViewServesHeldChunks(t *testing.T) {
	src := newStore(t, 0)
	data := randBytes(4, 5*minChunkSize+7)
	id := addBytes(t, src, data)
	r, err := src.openReader(id)
	if err != nil {
		t.Fatal(err)
	}
	if v := r.view(5); !bytes.Equal(v, data[5*minChunkSize:]) {
		t.Fatalf("view of a complete model's last chunk: %d bytes, equal %v", len(v), bytes.Equal(v, data[5*minChunkSize:]))
	}
	r.release()

	p := startDownload(t, src, newStore(t, 0), id)
	chunk := data[minChunkSize : 2*minChunkSize]
	if v := p.view(1); v != nil {
		t.Fatal("a chunk not held came from the mapping")
	}
	if _, err := p.write(1, chunk); err != nil {
		t.Fatal(err)
	}
	if v := p.view(1); !bytes.Equal(v, chunk) {
		t.Fatalf("view of a written chunk: %d bytes, equal %v", len(v), bytes.Equal(v, chunk))
	}
}
