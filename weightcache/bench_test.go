package weightcache

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/multiformats/go-multiaddr"

	"github.com/shoalmesh/shoal/mesh"
	"github.com/shoalmesh/shoal/mesh/meshtest"
)

// BenchmarkVerify measures chunk verification (BLAKE3, what a fetch pays
// per received chunk) and the whole-file SHA-256 pass, per core: run with
// -cpu 1.
//
//	go test -run '^$' -bench Verify -cpu 1 ./weightcache
func BenchmarkVerify(b *testing.B) {
	for _, size := range []int{1 << 20, DefaultChunkSize, 16 << 20} {
		data := randBytes(1, size)
		m := &Manifest{Version: 1, ChunkSize: int64(size), ChunkHash: ChunkHash,
			Files: []File{{Path: "x", Size: int64(size), SHA256: sha(data), Chunks: []string{chunkSum(data)}}}}
		l := newLayout(m)
		b.Run(fmt.Sprintf("chunk-blake3/%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				if !l.verifyChunk(0, data) {
					b.Fatal("verify failed")
				}
			}
		})
		b.Run(fmt.Sprintf("file-sha256/%dMiB", size>>20), func(b *testing.B) {
			b.SetBytes(int64(size))
			for i := 0; i < b.N; i++ {
				sha256.Sum256(data)
			}
		})
	}
}

// benchBytes is the model size for the fetch and import benchmarks:
// SHOAL_BENCH_BYTES (1073741824 for the reported number), else 64 MiB.
func benchBytes(b *testing.B) int64 {
	if v := os.Getenv("SHOAL_BENCH_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			b.Fatalf("SHOAL_BENCH_BYTES=%q", v)
		}
		return n
	}
	return 64 << 20
}

// benchDir is where benchmark stores live: SHOAL_BENCH_DIR (say /dev/shm,
// to take the disk out of a transport comparison), else a temp dir.
func benchDir(b *testing.B) string {
	if d := os.Getenv("SHOAL_BENCH_DIR"); d != "" {
		dir, err := os.MkdirTemp(d, "shoal-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = removeTree(dir) })
		return dir
	}
	return b.TempDir()
}

// benchChunk is the chunk size of the seeded model: SHOAL_BENCH_CHUNK
// bytes, else DefaultChunkSize (to compare chunk sizes end to end).
func benchChunk(b *testing.B) int64 {
	if v := os.Getenv("SHOAL_BENCH_CHUNK"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("SHOAL_BENCH_CHUNK=%q", v)
		}
		return n
	}
	return DefaultChunkSize
}

// writeRandomFile writes n pseudo-random bytes to p without holding them
// all in memory.
func writeRandomFile(b *testing.B, p string, n int64) {
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	block := randBytes(uint64(n), 1<<20)
	for off := int64(0); off < n; off += int64(len(block)) {
		block[0], block[1] = byte(off>>20), byte(off>>28) // every MiB differs
		if _, err := f.Write(block[:min(int64(len(block)), n-off)]); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports CPU seconds per GiB moved since start: a measure that
// holds up on a busy machine, where wall-clock throughput does not.
func reportCPU(b *testing.B, start time.Duration, bytes int64) {
	b.ReportMetric((cpuTime()-start).Seconds()/(float64(bytes*int64(b.N))/(1<<30)), "cpu-s/GiB")
}

// BenchmarkAdd measures importing one file (copy + SHA-256 + BLAKE3 chunks).
func BenchmarkAdd(b *testing.B) {
	n := benchBytes(b)
	src := filepath.Join(benchDir(b), "model.safetensors")
	writeRandomFile(b, src, n)
	b.SetBytes(n)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := Open(Config{Dir: filepath.Join(benchDir(b), strconv.Itoa(i))})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Add(context.Background(), src, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFetch moves one model of SHOAL_BENCH_BYTES between two nodes
// on loopback, next to what the same bytes cost over raw TCP and over a
// single-source HTTP download into the store.
//
//	SHOAL_BENCH_BYTES=1073741824 go test -run '^$' -bench Fetch -benchtime 3x ./weightcache
func BenchmarkFetch(b *testing.B) {
	n := benchBytes(b)
	src := filepath.Join(benchDir(b), "model.safetensors")
	writeRandomFile(b, src, n)

	b.Run("raw-tcp", func(b *testing.B) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		go func() {
			buf := make([]byte, 4<<20)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				for sent := int64(0); sent < n; {
					k, err := c.Write(buf[:min(int64(len(buf)), n-sent)])
					if err != nil {
						break
					}
					sent += int64(k)
				}
				c.Close()
			}
		}()
		b.SetBytes(n)
		c0 := cpuTime()
		defer func() { reportCPU(b, c0, n) }()
		for i := 0; i < b.N; i++ {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			got, _ := io.CopyBuffer(io.Discard, c, make([]byte, 4<<20))
			c.Close()
			if got != n {
				b.Fatalf("copied %d of %d", got, n)
			}
		}
	})

	b.Run("http-origin", func(b *testing.B) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.ServeFile(w, r, src)
		}))
		defer ts.Close()
		b.SetBytes(n)
		c0 := cpuTime()
		defer func() { reportCPU(b, c0, n) }()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s, err := Open(Config{Dir: filepath.Join(benchDir(b), strconv.Itoa(i))})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			_, err = s.FetchOrigin(context.Background(), OriginRequest{Files: []OriginFile{{URL: ts.URL + "/m", Path: "model.safetensors", Size: n}}}, nil)
			if err != nil {
				b.Fatal(err)
			}
		}
	})

	tcpOnly := func(c *mesh.Config) {
		meshtest.Fast(c)
		c.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/tcp/0")}
	}
	quicOnly := func(c *mesh.Config) {
		meshtest.Fast(c)
		c.ListenAddrs = []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/127.0.0.1/udp/0/quic-v1")}
	}
	for _, tc := range []struct {
		name string
		tune func(*mesh.Config)
	}{{"swarm-default", meshtest.Fast}, {"swarm-tcp", tcpOnly}, {"swarm-quic", quicOnly}} {
		b.Run(tc.name, func(b *testing.B) {
			nodes := meshtest.Pool(b, 2, tc.tune)
			seedStore, err := Open(Config{Dir: filepath.Join(benchDir(b), "seed"), ChunkSize: benchChunk(b)})
			if err != nil {
				b.Fatal(err)
			}
			id, err := seedStore.Add(context.Background(), src, "")
			if err != nil {
				b.Fatal(err)
			}
			srv := Serve(seedStore, nodes[0])
			defer srv.Close()
			find := &scriptedFinder{script: [][]*mesh.Node{{nodes[0]}}}
			b.SetBytes(n)
			b.ResetTimer()
			c0 := cpuTime()
			defer func() { reportCPU(b, c0, n) }()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				s, err := Open(Config{Dir: filepath.Join(benchDir(b), strconv.Itoa(i))})
				if err != nil {
					b.Fatal(err)
				}
				f, err := NewFetcher(s, nodes[1], find, nil, FetchConfig{})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
				st, err := f.Fetch(ctx, id, nil)
				cancel()
				if err != nil {
					b.Fatal(err)
				}
				if i == 0 {
					b.Logf("%s: %+v", tc.name, st)
				}
			}
		})
	}
}
