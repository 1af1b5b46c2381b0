// Command workload is the small program the end-to-end tests deploy where
// the reference workload does not fit: a slow HTTP service (autoscaling),
// a program that fails at once (failed replicas), and a gang member that
// checks it can reach every peer the pool handed it.
//
//	workload serve [--delay D]   answers /health and /v1/chat/completions after D
//	workload fail MESSAGE        prints MESSAGE and exits 3
//	workload gang [--fail-rank N] serves /rank and /peers; healthy once every
//	                             peer in SHOAL_GANG_PEERS answered /rank with its rank
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: workload serve|fail|gang [flags]")
		os.Exit(2)
	}
	mode, args := os.Args[1], os.Args[2:]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	delay := fs.Duration("delay", 0, "serve: how long each chat request takes")
	failRank := fs.Int("fail-rank", -1, "gang: the member of this rank exits at once")
	_ = fs.Parse(args)
	switch mode {
	case "fail":
		fmt.Println("workload: starting")
		fmt.Println("workload: " + strings.Join(fs.Args(), " "))
		os.Exit(3)
	case "serve":
		serve(func(mux *http.ServeMux) {
			mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {})
			mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				select {
				case <-time.After(*delay):
				case <-r.Context().Done():
					return
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"done after %v"},"finish_reason":"stop"}]}`, *delay)
			})
		})
	case "gang":
		gang(*failRank)
	default:
		fmt.Fprintf(os.Stderr, "workload: unknown mode %q\n", mode)
		os.Exit(2)
	}
}

// serve listens on HOST:PORT with the routes routes adds, until SIGTERM.
func serve(routes func(*http.ServeMux)) {
	mux := http.NewServeMux()
	routes(mux)
	addr := net.JoinHostPort(os.Getenv("HOST"), os.Getenv("PORT"))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
	fmt.Println("workload: listening on", ln.Addr())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, "workload:", err)
		os.Exit(1)
	}
}

// gang serves /rank, and /health once every peer answered /rank with the
// rank its place in SHOAL_GANG_PEERS gives.
func gang(failRank int) {
	rank, err1 := strconv.Atoi(os.Getenv("SHOAL_GANG_RANK"))
	size, err2 := strconv.Atoi(os.Getenv("SHOAL_GANG_SIZE"))
	peers := strings.Split(os.Getenv("SHOAL_GANG_PEERS"), ",")
	if err1 != nil || err2 != nil || len(peers) != size {
		fmt.Fprintf(os.Stderr, "workload: bad gang environment: rank %q size %q peers %q\n",
			os.Getenv("SHOAL_GANG_RANK"), os.Getenv("SHOAL_GANG_SIZE"), os.Getenv("SHOAL_GANG_PEERS"))
		os.Exit(1)
	}
	if rank == failRank {
		fmt.Printf("workload: rank %d refuses to start\n", rank)
		os.Exit(3)
	}
	fmt.Printf("workload: rank %d of %d, peers %v\n", rank, size, peers)
	var reached atomic.Int32
	go func() {
		c := http.Client{Timeout: 2 * time.Second}
		for i, p := range peers {
			if i == rank {
				continue
			}
			for {
				resp, err := c.Get("http://" + p + "/rank")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if strings.TrimSpace(string(b)) == strconv.Itoa(i) {
						fmt.Printf("workload: reached rank %d at %s\n", i, p)
						reached.Add(1)
						break
					}
					fmt.Printf("workload: %s answered rank %q; want %d\n", p, b, i)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}()
	serve(func(mux *http.ServeMux) {
		mux.HandleFunc("/rank", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, rank) })
		mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
			if int(reached.Load()) != size-1 {
				http.Error(w, "peers not reached yet", http.StatusServiceUnavailable)
			}
		})
		mux.HandleFunc("/peers", func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]any{"rank": rank, "size": size, "peers": peers, "reached": reached.Load()})
		})
	})
}
