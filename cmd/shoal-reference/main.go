// Command shoal-reference is the reference workload of shoal: a small
// OpenAI-compatible HTTP server that loads a model directory, checks every
// file against the directory's manifest and answers /v1/models and
// /v1/chat/completions (streaming too) deterministically from what it loaded.
//
// It is the workload of shoal's tests, of the `make run` demo and of the
// benchmarks. It is a third-party program as far as shoal is concerned: it
// uses the standard library only, builds static (CGO_ENABLED=0) and runs as a
// process or as a FROM scratch container image.
//
// # Model directory
//
// A reference model is a directory with
//
//	config.json            {"format":"shoal-reference/v1","name":"tiny","vocab":"vocab.txt","weights":"weights.bin"}
//	vocab.txt              the vocabulary, one word per line
//	weights.bin            opaque bytes; their SHA-256 seeds every answer
//	.shoal/manifest.json   {"files":[{"path":"config.json","size":123,"sha256":"…"},…]}
//
// The manifest is the one shoal's weight cache writes when it materialises a
// model; fields other than files[].path, size and sha256 are ignored. Every
// listed file must exist with that size and SHA-256, and the three model files
// must be listed, or the server refuses to start (exit status 1).
//
// `shoal-reference --generate DIR` writes such a directory (manifest
// included) from a seed, so the same flags always give the same model.
//
// # Answers
//
// A completion is max_tokens words (default 16) drawn from the vocabulary:
// word i is vocab[u64(sha256(weightsSHA256 | prompt | i)[:8]) mod len(vocab)],
// where prompt is each message as "role: content\n". The same model and the
// same messages always give the same answer.
//
// # Configuration
//
//	--listen ADDR          default $HOST:$PORT, HOST defaulting to 0.0.0.0 and PORT to 8000
//	--model-dir DIR        default $SHOAL_MODEL_DIR
//	--served-model-name N  the id /v1/models reports and requests must name;
//	                       default $SHOAL_SERVED_MODEL_NAME, else the model's name
//	--vram-limit-mib N     default $SHOAL_VRAM_LIMIT_MIB; refuse to start when the
//	                       weights are larger than the limit (0: no limit)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// shutdownGrace bounds how long in-flight requests may finish after SIGTERM.
const shutdownGrace = 5 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shoal-reference", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultListen(), "address to listen on (default $HOST:$PORT)")
	modelDir := fs.String("model-dir", os.Getenv("SHOAL_MODEL_DIR"), "model directory (default $SHOAL_MODEL_DIR)")
	served := fs.String("served-model-name", os.Getenv("SHOAL_SERVED_MODEL_NAME"), "model id to serve (default $SHOAL_SERVED_MODEL_NAME, else the model's name)")
	vramLimit := fs.Int64("vram-limit-mib", envInt64("SHOAL_VRAM_LIMIT_MIB"), "VRAM limit in MiB; refuse weights larger than it (0: none; default $SHOAL_VRAM_LIMIT_MIB)")
	generate := fs.String("generate", "", "write a reference model to this directory and exit")
	genName := fs.String("name", "tiny-reference", "with --generate: the model's name")
	genSize := fs.Int64("size", 64<<10, "with --generate: size of weights.bin in bytes")
	genSeed := fs.Uint64("seed", 1, "with --generate: seed of the vocabulary and weights")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "shoal-reference: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *generate != "" {
		if err := Generate(*generate, GenerateOptions{Name: *genName, WeightsBytes: *genSize, Seed: *genSeed}); err != nil {
			fmt.Fprintf(stderr, "shoal-reference: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote reference model %q to %s\n", *genName, *generate)
		return 0
	}
	if *modelDir == "" {
		fmt.Fprintln(stderr, "shoal-reference: no model directory: pass --model-dir or set SHOAL_MODEL_DIR")
		return 2
	}

	start := time.Now()
	m, err := LoadModel(*modelDir)
	if err != nil {
		fmt.Fprintf(stderr, "shoal-reference: refusing to start: %v\n", err)
		return 1
	}
	if *vramLimit > 0 && m.WeightsBytes > *vramLimit<<20 {
		fmt.Fprintf(stderr, "shoal-reference: refusing to start: weights need %d MiB, VRAM limit is %d MiB\n",
			(m.WeightsBytes+(1<<20)-1)>>20, *vramLimit)
		return 1
	}
	name := *served
	if name == "" {
		name = m.Name
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "shoal-reference: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "shoal-reference: serving model %q as %q on %s (%d files verified in %v)\n",
		m.Name, name, ln.Addr(), m.Files, time.Since(start).Round(time.Millisecond))

	srv := &http.Server{Handler: newServer(m, name, *vramLimit), ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		fmt.Fprintf(stderr, "shoal-reference: %v\n", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "shoal-reference: shutdown: %v\n", err)
	}
	<-errc
	fmt.Fprintln(stdout, "shoal-reference: stopped")
	return 0
}

func defaultListen() string {
	host, port := os.Getenv("HOST"), os.Getenv("PORT")
	if host == "" {
		host = "0.0.0.0"
	}
	if port == "" {
		port = "8000"
	}
	return net.JoinHostPort(host, port)
}

func envInt64(key string) int64 {
	n, _ := strconv.ParseInt(os.Getenv(key), 10, 64)
	return n
}
