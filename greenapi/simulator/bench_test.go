package simulator

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSimulatorLoopback measures whole HTTP round trips over loopback against a simulator
// with no latency and no rate limit, at a concurrency of 16 goroutines per CPU (32 on two
// CPUs, 64 on four): the simulator must never be what limits a benchmark of the engine.
// Compare it with BenchmarkLoopbackBaseline from the same run: the ratio is what the simulator
// costs over net/http itself.
func BenchmarkSimulatorLoopback(b *testing.B) {
	sim, err := New(Config{
		Seed:      1,
		Edition:   EditionMixed,
		Instances: []Instance{{ID: "1101000001", Token: "tok", RPS: -1}},
	})
	if err != nil {
		b.Fatal(err)
	}
	benchLoopback(b, sim)
}

// BenchmarkLoopbackBaseline is the same load against a handler that only writes a constant
// answer: the ceiling net/http sets on this machine.
func BenchmarkLoopbackBaseline(b *testing.B) {
	answer := []byte(`{"urlAvatar":"","available":true}`)
	benchLoopback(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
}

// benchLoopback drives h over loopback with GetAvatar requests for 10,000 numbers and
// reports requests per second.
func benchLoopback(b *testing.B, h http.Handler) {
	b.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}
	defer client.CloseIdleConnections()
	url := srv.URL + "/waInstance1101000001/getAvatar/tok"
	var next atomic.Int64
	var failed atomic.Int64

	b.SetParallelism(16)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		body := make([]byte, 0, 64)
		for pb.Next() {
			n := 79000000000 + next.Add(1)%10000
			body = append(body[:0], `{"chatId":"`...)
			body = strconv.AppendInt(body, n, 10)
			body = append(body, `@c.us"}`...)
			resp, err := client.Post(url, "application/json", bytes.NewReader(body))
			if err != nil {
				failed.Add(1)
				continue
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusTooManyRequests {
				failed.Add(1)
			}
		}
	})
	elapsed := time.Since(start)
	b.StopTimer()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d requests failed or were rate limited", f)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
}

// BenchmarkServeHTTP is the handler's own cost per request, without the network: what the
// simulator adds to every round trip.
func BenchmarkServeHTTP(b *testing.B) {
	sim, err := New(Config{
		Seed:      1,
		Edition:   EditionMixed,
		Instances: []Instance{{ID: "1101000001", Token: "tok", RPS: -1}},
	})
	if err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		body := make([]byte, 0, 64)
		rec := &discardWriter{h: http.Header{}}
		rd := bytes.NewReader(nil)
		req := httptest.NewRequest("POST", "/waInstance1101000001/getAvatar/tok", nil)
		req.Body = io.NopCloser(rd)
		for pb.Next() {
			n := 79000000000 + next.Add(1)%10000
			body = append(body[:0], `{"chatId":"`...)
			body = strconv.AppendInt(body, n, 10)
			body = append(body, `@c.us"}`...)
			rd.Reset(body)
			sim.ServeHTTP(rec, req)
			if rec.status != http.StatusOK && rec.status != http.StatusBadRequest { // bad request data
				b.Fatalf("status %d", rec.status)
			}
		}
	})
}

// discardWriter is a ResponseWriter that keeps only the status.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(status int)      { w.status = status }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
