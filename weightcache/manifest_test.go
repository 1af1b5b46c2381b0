package weightcache

import (
	"errors"
	"strings"
	"testing"
)

func hex64(c byte) string { return strings.Repeat(string(c), 64) }

func testManifest() *Manifest {
	return &Manifest{
		Version: 1, ChunkSize: minChunkSize, ChunkHash: ChunkHash,
		Files: []File{
			{Path: "config.json", Size: 10, SHA256: hex64('a'), Chunks: []string{hex64('b')}},
			{Path: "empty", Size: 0, SHA256: hex64('c'), Chunks: []string{}},
			{Path: "sub/model.safetensors", Size: minChunkSize + 1, SHA256: hex64('d'), Chunks: []string{hex64('e'), hex64('f')}},
		},
	}
}

func TestManifestRoundTrip(t *testing.T) {
	m := testManifest()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeManifest(b)
	if err != nil {
		t.Fatalf("DecodeManifest(%s) = %v", b, err)
	}
	b2, _ := got.Encode()
	if string(b2) != string(b) {
		t.Fatalf("re-encoded %s; want %s", b2, b)
	}
	id := IDOf(b)
	if err := CheckID(id); err != nil {
		t.Fatalf("CheckID(%s) = %v", id, err)
	}
	if !strings.HasPrefix(id, "b") {
		t.Errorf("ID %s is not base32 CIDv1", id)
	}
	if _, err := VerifyManifest(id, b); err != nil {
		t.Fatalf("VerifyManifest = %v", err)
	}
	other := IDOf(append([]byte(nil), b[:len(b)-1]...))
	if _, err := VerifyManifest(other, b); !errors.Is(err, ErrManifestMismatch) {
		t.Fatalf("VerifyManifest(wrong id) = %v; want ErrManifestMismatch", err)
	}
	for _, bad := range []string{"", "abc", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy", id + "x"} {
		if err := CheckID(bad); !errors.Is(err, ErrBadID) {
			t.Errorf("CheckID(%q) = %v; want ErrBadID", bad, err)
		}
	}
}

func TestManifestRejects(t *testing.T) {
	cases := []struct {
		name string
		edit func(m *Manifest)
		want error
	}{
		{"dotdot", func(m *Manifest) { m.Files[0].Path = "../config.json" }, ErrUnsafePath},
		{"inner dotdot", func(m *Manifest) { m.Files[2].Path = "sub/../../x" }, ErrUnsafePath},
		{"absolute", func(m *Manifest) { m.Files[0].Path = "/etc/passwd" }, ErrUnsafePath},
		{"not clean", func(m *Manifest) { m.Files[2].Path = "sub//model.safetensors" }, ErrUnsafePath},
		{"dot element", func(m *Manifest) { m.Files[2].Path = "./sub" }, ErrUnsafePath},
		{"reserved", func(m *Manifest) { m.Files[2].Path = ".shoal/manifest.json" }, ErrUnsafePath},
		{"backslash", func(m *Manifest) { m.Files[0].Path = "a\\..\\b" }, ErrUnsafePath},
		{"unsorted", func(m *Manifest) { m.Files[0], m.Files[1] = m.Files[1], m.Files[0] }, ErrBadManifest},
		{"duplicate", func(m *Manifest) { m.Files[1] = m.Files[0] }, ErrBadManifest},
		{"file and dir", func(m *Manifest) { m.Files[1].Path = "sub" }, ErrBadManifest},
		{"chunk count", func(m *Manifest) { m.Files[2].Chunks = m.Files[2].Chunks[:1] }, ErrBadManifest},
		{"size grows", func(m *Manifest) { m.Files[0].Size = minChunkSize + 1 }, ErrBadManifest},
		{"upper hex", func(m *Manifest) { m.Files[0].SHA256 = strings.ToUpper(hex64('a')) }, ErrBadManifest},
		{"chunk size", func(m *Manifest) { m.ChunkSize = 1000 }, ErrBadManifest},
		{"hash", func(m *Manifest) { m.ChunkHash = "md5" }, ErrBadManifest},
		{"version", func(m *Manifest) { m.Version = 2 }, ErrBadManifest},
		{"negative", func(m *Manifest) { m.Files[1].Size = -1 }, ErrBadManifest},
	}
	for _, c := range cases {
		m := testManifest()
		c.edit(m)
		if _, err := m.Encode(); !errors.Is(err, c.want) {
			t.Errorf("%s: Encode = %v; want %v", c.name, err, c.want)
		}
	}
	good, _ := testManifest().Encode()
	for _, b := range []string{
		" " + string(good),
		string(good) + "\n",
		string(good) + "{}",
		strings.Replace(string(good), `"version":1`, `"version":1,"extra":1`, 1),
		strings.Replace(string(good), `{"version":1,"chunk_size":65536`, `{"chunk_size":65536,"version":1`, 1),
	} {
		if _, err := DecodeManifest([]byte(b)); !errors.Is(err, ErrBadManifest) {
			t.Errorf("DecodeManifest(%.60q...) = %v; want ErrBadManifest", b, err)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	good, _ := testManifest().Encode()
	f.Add(good)
	f.Add([]byte(`{"version":1,"chunk_size":65536,"chunk_hash":"blake3","files":[]}`))
	f.Add([]byte(`{"version":1,"chunk_size":65536,"chunk_hash":"blake3","files":[{"path":"../x","size":0,"sha256":"` + hex64('0') + `","chunks":[]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			return
		}
		again, err := m.Encode()
		if err != nil || string(again) != string(b) {
			t.Fatalf("decoded manifest does not re-encode to its bytes: %v", err)
		}
		for _, f := range m.Files {
			if checkPath(f.Path) != nil || strings.HasPrefix(f.Path, "/") || strings.Contains("/"+f.Path+"/", "/../") {
				t.Fatalf("unsafe path %q accepted", f.Path)
			}
		}
		l := newLayout(m)
		var total int64
		for _, c := range l.chunks {
			if c.n <= 0 || int64(c.n) > m.ChunkSize {
				t.Fatalf("chunk length %d", c.n)
			}
			total += int64(c.n)
		}
		if total != m.Size() {
			t.Fatalf("chunks cover %d bytes; files %d", total, m.Size())
		}
	})
}
