package enrich_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
)

// observed is an Observer that keeps count.
type observed struct {
	mu      sync.Mutex
	calls   map[string]int64 // "instance method outcome"
	rows    map[string]int64
	retries map[string]int64 // "instance kind"
}

func newObserved() *observed {
	return &observed{calls: map[string]int64{}, rows: map[string]int64{}, retries: map[string]int64{}}
}

func (r *observed) Call(instance, method, outcome string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[instance+" "+method+" "+outcome]++
}

func (r *observed) Rows(status string, n int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows[status] += n
}

func (r *observed) Retry(instance, kind string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retries[instance+" "+kind]++
}

// TestObserverSeesWhatTheSummarySays: the Observer is told of every call, row and retry the
// summary counts, by instance; Snapshot agrees with the summary at the end.
func TestObserverSeesWhatTheSummarySays(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(60)
	b.insertPhones(t, ps...)
	api := newFake("1", func(tg greenapi.Target, n int) (greenapi.Avatar, error) {
		switch {
		case tg.String() == ps[3] && n == 0: // once transient, then fine
			return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 503, "")
		case tg.String() == ps[7]:
			return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, greenapi.ReasonBadRequestData)
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	rec := newObserved()
	cfg := config(api)
	cfg.Observer = rec
	cfg.Sleep = nil
	cfg.Retry = enrich.Backoff{Base: time.Millisecond, Max: time.Millisecond}
	r, err := enrich.NewRunner(b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if s := r.Snapshot(); s.Due != -1 || len(s.Instances) != 1 || s.Instances[0].State != enrich.StateRunning {
		t.Fatalf("snapshot before the run: %+v", s)
	}
	sum, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"1 getAvatar ok": 59, "1 getAvatar invalid": 1, "1 getAvatar transient": 1, "1 getStateInstance ok": 1}
	for k, n := range want {
		if rec.calls[k] != n {
			t.Errorf("observer calls[%q] = %d, want %d (all: %v)", k, rec.calls[k], n, rec.calls)
		}
	}
	if rec.rows["done"] != sum.Done || rec.rows["failed"] != sum.Failed || sum.Done != 59 || sum.Failed != 1 {
		t.Errorf("observer rows %v, summary %+v: want 59 done and 1 failed in both", rec.rows, sum)
	}
	if rec.retries["1 transient"] != 1 {
		t.Errorf("observer retries %v, want one transient", rec.retries)
	}
	s := r.Snapshot()
	if s.Due != 60 || s.Left() != 0 || s.InFlight != 0 || s.Summary.Done != 59 {
		t.Errorf("snapshot after the run: due %d, left %d, in flight %d, done %d; want 60, 0, 0, 59", s.Due, s.Left(), s.InFlight, s.Summary.Done)
	}
}
