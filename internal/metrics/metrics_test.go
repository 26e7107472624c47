package metrics

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
)

// TestServeProfiler: /debug/pprof/ is served only when asked for.
func TestServeProfiler(t *testing.T) {
	for _, profile := range []bool{false, true} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		ctx, cancel := context.WithCancel(context.Background())
		m := New(func() (float64, float64, float64) { return 0, 0, 0 })
		if err := m.Serve(ctx, addr, profile, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + addr + "/debug/pprof/heap?debug=1")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if got := resp.StatusCode == http.StatusOK; got != profile {
			t.Errorf("profile %v: /debug/pprof/heap answered %d: %.80s", profile, resp.StatusCode, body)
		}
		cancel()
	}
}
