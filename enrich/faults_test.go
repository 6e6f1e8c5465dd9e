package enrich_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5/pgconn"
)

// Whose fault is it? Each test injects one owner's failure and checks that only the owner paid.

// netErr is what the client returns when the instance cannot be reached.
func netErr() error {
	return &greenapi.Error{Class: greenapi.ClassTransient, Instance: "1", Method: "getAvatar",
		URL: "waInstance1/getAvatar/***", Err: errors.New("dial tcp 127.0.0.1:1: connect: connection refused")}
}

// untouched counts rows no run changed: pending, no attempt spent, not leased.
const untouched = "status = 'pending' AND attempts = 0 AND locked_by IS NULL AND lease_token IS NULL"

// TestInstanceOutage: calls for different rows fail one after another with network errors,
// from some point on: the instance is paused, probed until starting_timeout, and leaves the run;
// no row is failed, locked or charged an attempt.
func TestInstanceOutage(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(200)...)
	var answered atomic.Int32
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		if answered.Add(1) > 30 {
			return greenapi.Avatar{}, netErr()
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	api.state = func(n int) (string, error) {
		if n == 0 {
			return greenapi.StateAuthorized, nil
		}
		return "", netErr()
	}
	cfg := config(api)
	cfg.Sleep = nil // the timeout is measured on the clock
	cfg.StartingTimeout = 300 * time.Millisecond
	cfg.StartingBackoff = enrich.Backoff{Base: 10 * time.Millisecond, Max: 20 * time.Millisecond}
	cfg.Retry = enrich.Backoff{Base: time.Millisecond, Max: time.Millisecond}
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if !errors.Is(err, enrich.ErrNoInstance) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v, want ErrNoInstance saying the instance is unreachable", err)
	}
	done := b.count(t, "status = 'done'")
	if failed, locked := b.count(t, "status = 'failed'"), b.count(t, "locked_by IS NOT NULL"); failed != 0 || locked != 0 {
		t.Fatalf("%d rows failed and %d locked by an outage (%+v)", failed, locked, sum)
	}
	if got := b.count(t, untouched); got != 200-done || done != 30 {
		t.Fatalf("done %d, untouched %d; want 30 done and the other 170 untouched (%+v)", done, got, sum)
	}
	if n := sum.Calls["getAvatar transient"]; n > int64(cfg.Workers)+3 {
		t.Fatalf("%d calls failed after the outage began: the instance should pause after 3 rows", n)
	}
}

// TestInstanceOutageOtherInstanceCarriesOn: the rows of an unreachable instance go to the
// healthy one, untouched.
func TestInstanceOutageOtherInstanceCarriesOn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(200)...)
	bad := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{}, netErr() })
	bad.state = func(n int) (string, error) {
		if n == 0 {
			return greenapi.StateAuthorized, nil // the outage begins after the pre-flight check
		}
		return "", netErr()
	}
	good := newFake("2", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	cfg := config(bad, good)
	cfg.StartingTimeout = time.Hour
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.count(t, "status = 'done' AND attempts = 0 AND locked_by IS NULL"); got != 200 {
		t.Fatalf("done without an attempt spent = %d, want 200 (%+v)", got, sum)
	}
}

// TestIsolated5xx: one row's own 5xx, with the others answered, keeps the per-row retry: that
// row, and only it, spends an attempt.
func TestIsolated5xx(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(60)
	b.insertPhones(t, ps...)
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		if tg.String() == ps[17] {
			return greenapi.Avatar{}, apiErr(greenapi.ClassTransient, 503, "")
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	if _, err := runOnce(t, context.Background(), b.store, config(api)); err != nil {
		t.Fatal(err)
	}
	if r := b.row(t, ps[17]); r.Status != "pending" || r.Attempts != 1 || *r.Reason != "HTTP 503" {
		t.Fatalf("the failing row: %+v, want rescheduled with one attempt and reason HTTP 503", r)
	}
	if got := b.count(t, "status = 'done' AND attempts = 0"); got != 59 {
		t.Fatalf("done rows = %d, want the other 59", got)
	}
}

// TestNothingBut429: an instance that answers only 429 slows down, leaves the run after
// starting_timeout, and no row pays.
func TestNothingBut429(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(50)...)
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{}, apiErr(greenapi.ClassRateLimited, 429, "too many requests (HTTP 429)")
	})
	cfg := config(api)
	cfg.Instances[0].RPS = 10
	cfg.Sleep = nil
	cfg.StartingTimeout = 2 * time.Second
	start := time.Now()
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	elapsed := time.Since(start)
	if !errors.Is(err, enrich.ErrNoInstance) || !strings.Contains(err.Error(), "nothing but 429") {
		t.Fatalf("err = %v, want ErrNoInstance saying nothing but 429 came", err)
	}
	if elapsed < cfg.StartingTimeout {
		t.Fatalf("left after %s, before starting_timeout %s", elapsed, cfg.StartingTimeout)
	}
	// At 10 rps unslowed, 2 s would be 20 calls; the cuts bring it to about half.
	if calls := sum.Calls["getAvatar rate_limited"]; calls > 14 {
		t.Fatalf("%d calls in %s: the rate did not come down (%+v)", calls, elapsed, sum)
	}
	if got := b.count(t, untouched); got != 50 {
		t.Fatalf("untouched rows = %d, want 50", got)
	}
	t.Logf("%d calls answered 429 in %s, then out", sum.Calls["getAvatar rate_limited"], elapsed.Round(time.Millisecond))
}

// TestRateLimitedSharedBudget: with the shared budget, 429s are the instance's to pay: its
// rate comes down and its headroom widens in the budget, for every process, while the rows they
// met are called again and end done with no attempt spent. (Three 429s, not more: each gives up
// the rest of the instance's block, up to a second, before the next block.)
func TestRateLimitedSharedBudget(t *testing.T) {
	t.Parallel()
	b := setup(t)
	targets := phones(10)
	b.insertPhones(t, targets...)
	throttled := map[string]bool{targets[1]: true, targets[4]: true, targets[7]: true}
	api := newFake("1", func(tg greenapi.Target, n int) (greenapi.Avatar, error) {
		if n == 0 && throttled[tg.String()] {
			return greenapi.Avatar{}, apiErr(greenapi.ClassRateLimited, 429, "too many requests (HTTP 429)")
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Budget = b.store
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatalf("run: %v (%+v)", err, sum)
	}
	if sum.RateLimited != 3 || sum.Done != 10 {
		t.Fatalf("summary %+v: want 3 429s and 10 rows done", sum)
	}
	if got := b.count(t, "status = 'done' AND attempts = 0 AND locked_by IS NULL"); got != 10 {
		t.Fatalf("%d rows done with no attempt spent, want all 10", got)
	}
	var rate, headroom float64
	if err := b.pool.QueryRow(context.Background(), `SELECT rate, headroom FROM enrich.enrich_instances WHERE instance_id = '1'`).
		Scan(&rate, &headroom); err != nil {
		t.Fatal(err)
	}
	if rate >= cfg.Instances[0].RPS || headroom <= 0.015 {
		t.Fatalf("the instance's budget after 3 429s: rate %v of %v, headroom %v; want the rate cut and the headroom above 0.015",
			rate, cfg.Instances[0].RPS, headroom)
	}
	t.Logf("after 3 429s: rate %.0f of %.0f, headroom %.3f; 10 rows done, 0 attempts", rate, cfg.Instances[0].RPS, headroom)
}

// TestRequestFormRefused: the API rejects the request's form for every valid number: the run
// stops with ErrConfiguration naming request_by, and no row is failed.
func TestRequestFormRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(200)...)
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		e := apiErr(greenapi.ClassInvalid, 400, "Validation failed. Details: 'chatId' is required").(*greenapi.Error)
		e.Request = `{"phoneNumber":` + tg.String() + `}`
		return greenapi.Avatar{}, e
	})
	sum, err := runOnce(t, context.Background(), b.store, config(api))
	if !errors.Is(err, enrich.ErrConfiguration) {
		t.Fatalf("err = %v, want ErrConfiguration", err)
	}
	for _, want := range []string{`greenapi.request_by = "phoneNumber"`, "'chatId' is required", `{"phoneNumber":7900`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the message does not say %s: %v", want, err)
		}
	}
	if got := b.count(t, untouched); got != 200 {
		t.Fatalf("untouched rows = %d, want 200 (%+v)", got, sum)
	}
	if calls := api.totalCalls(); calls > 5+4 {
		t.Fatalf("%d calls: the run should stop after 5 refusals and the calls in flight (%+v)", calls, sum)
	}
}

// TestLoneBadRequest: among answered rows, a row the API calls "bad request data" is that row's
// failure, with the API's words, and the run goes on.
func TestLoneBadRequest(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(100)
	b.insertPhones(t, ps...)
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		if strings.HasSuffix(tg.String(), "7") {
			return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, greenapi.ReasonBadRequestData)
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	if _, err := runOnce(t, context.Background(), b.store, config(api)); err != nil {
		t.Fatal(err)
	}
	if got := b.count(t, "status = 'failed' AND reason = 'bad request data' AND attempts = 1"); got != 10 {
		t.Fatalf("failed rows = %d, want the 10 numbers ending in 7", got)
	}
	if got := b.count(t, "status = 'done'"); got != 90 {
		t.Fatalf("done rows = %d, want 90", got)
	}
}

// TestJunkRowsAreNoConfigFault: a list where runs of numbers the API rejects come among numbers
// it answers is the rows' fault, however long the runs, once the request's form has worked: each
// rejected row fails with the API's words and the run goes on. (Five refusals in a row stopped
// such runs as a configuration error: at 2% bad rows and 16 calls in flight that came about once
// in a million rows; at 30%, every few thousand.)
func TestJunkRowsAreNoConfigFault(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ps := phones(400)
	b.insertPhones(t, ps...)
	bad := func(tg greenapi.Target) bool {
		var i int
		_, _ = fmt.Sscanf(tg.String()[4:], "%d", &i)
		return i >= 20 && i%20 >= 12 // 8 in a row out of every 20, after the first 20
	}
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		if bad(tg) {
			return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, greenapi.ReasonBadRequestData)
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Workers = 1 // answers in claim order, so the runs of refusals are exactly 8 long
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatalf("run: %v (%+v)", err, sum)
	}
	if got := b.count(t, "status = 'failed' AND reason = 'bad request data' AND attempts = 1"); got != 19*8 {
		t.Fatalf("failed rows = %d, want the %d rejected ones", got, 19*8)
	}
	if got := b.count(t, "status = 'done'"); got != 400-19*8 {
		t.Fatalf("done rows = %d, want %d", got, 400-19*8)
	}
}

// otherLengths are n numbers of the lengths the seed did not document, 10 and 13 digits in turn
// (Singapore's and Brazil's).
func otherLengths(n int) []string {
	out := make([]string, n)
	for i := range out {
		if i%2 == 0 {
			out[i] = fmt.Sprintf("659%07d", i)
		} else {
			out[i] = fmt.Sprintf("55119%08d", i)
		}
	}
	return out
}

// TestOtherLengthRefusalsAreTheRows: an API that takes only the seed's 11 or 12 digits refuses
// every number of 10 or 13 as "bad request data": each refusal is its row's own failure, however
// many come in a row and whether or not the request's form has worked yet, so the run goes on
// (five such refusals in a row stopped it as a configuration error). Only the numbers the form
// is judged by count: among them, a run of refusals still stops it.
func TestOtherLengthRefusalsAreTheRows(t *testing.T) {
	t.Parallel()
	badRequest := func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, greenapi.ReasonBadRequestData)
	}
	t.Run("from the first call", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, otherLengths(300)...)
		api := newFake("1", badRequest)
		sum, err := runOnce(t, context.Background(), b.store, config(api))
		if err != nil {
			t.Fatalf("run: %v (%+v)", err, sum)
		}
		if got := b.count(t, "status = 'failed' AND reason = 'bad request data' AND attempts = 1"); got != 300 || api.totalCalls() != 300 {
			t.Fatalf("%d rows failed with the API's words after %d calls, want all 300 after 300 (%+v)", got, api.totalCalls(), sum)
		}
	})
	t.Run("after answers", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, phones(50)...)
		b.insertPhones(t, otherLengths(250)...)
		api := newFake("1", func(tg greenapi.Target, n int) (greenapi.Avatar, error) {
			if tg.SeedLength() {
				return greenapi.Avatar{Available: yes()}, nil
			}
			return badRequest(tg, n)
		})
		cfg := config(api)
		cfg.Workers = 1 // in claim order: 50 answers, then 250 refusals in a row
		sum, err := runOnce(t, context.Background(), b.store, cfg)
		if err != nil {
			t.Fatalf("run: %v (%+v)", err, sum)
		}
		if done, failed := b.count(t, "status = 'done'"), b.count(t, "status = 'failed' AND reason = 'bad request data' AND attempts = 1"); done != 50 || failed != 250 {
			t.Fatalf("done %d, failed %d; want 50 and the 250 refused (%+v)", done, failed, sum)
		}
	})
	t.Run("neither counted nor a break in a run of the seed's lengths", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		var mixed []string
		for i, p := range phones(100) {
			mixed = append(mixed, p, otherLengths(200)[2*i+1])
		}
		b.insertPhones(t, mixed...)
		api := newFake("1", badRequest)
		cfg := config(api)
		cfg.Workers = 1 // in claim order: 11 digits, 13 digits, 11 digits, ...
		sum, err := runOnce(t, context.Background(), b.store, cfg)
		if !errors.Is(err, enrich.ErrConfiguration) {
			t.Fatalf("err = %v, want ErrConfiguration after 5 refusals of 11-digit numbers (%+v)", err, sum)
		}
		// The fifth 11-digit refusal stops the run: the four 13-digit ones between are failed.
		if got := b.count(t, "status = 'failed' AND reason = 'bad request data' AND length(phone_number) = 13"); got != 4 {
			t.Errorf("%d 13-digit rows failed, want the 4 refused before the stop", got)
		}
		if got := b.count(t, untouched+" AND length(phone_number) = 11"); got != 100 {
			t.Errorf("%d 11-digit rows untouched, want all 100 (%+v)", got, sum)
		}
		if calls := api.totalCalls(); calls != 9 {
			t.Errorf("%d calls, want 9", calls)
		}
	})
	t.Run("the form's own words count whatever the number", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		b.insertPhones(t, otherLengths(200)...)
		api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
			return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, "Validation failed. Details: 'chatId' is required")
		})
		sum, err := runOnce(t, context.Background(), b.store, config(api))
		if !errors.Is(err, enrich.ErrConfiguration) {
			t.Fatalf("err = %v, want ErrConfiguration", err)
		}
		if got := b.count(t, untouched); got != 200 {
			t.Fatalf("untouched rows = %d, want 200 (%+v)", got, sum)
		}
	})
}

// TestRequestFormRefusedMidRun: the API begins to refuse every request after answering some (an
// edition change under a running job): the run stops with ErrConfiguration within a few more
// calls, the answered rows are done and the rest untouched.
func TestRequestFormRefusedMidRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(300)...)
	var calls atomic.Int64
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		if calls.Add(1) <= 100 {
			return greenapi.Avatar{Available: yes()}, nil
		}
		return greenapi.Avatar{}, apiErr(greenapi.ClassInvalid, 400, "Validation failed. Details: 'chatId' is required")
	})
	cfg := config(api)
	cfg.Workers = 1
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if !errors.Is(err, enrich.ErrConfiguration) {
		t.Fatalf("err = %v, want ErrConfiguration (%+v)", err, sum)
	}
	if got := b.count(t, "status = 'done'"); got != 100 {
		t.Fatalf("done rows = %d, want the 100 answered", got)
	}
	if got := b.count(t, untouched); got != 200 {
		t.Fatalf("untouched rows = %d, want 200 (%+v)", got, sum)
	}
	// After 100 answers and no refusal, 9 refusals in a row are a chance of less than 1e-12.
	if refused := api.totalCalls() - 100; refused != 9 {
		t.Fatalf("%d refusals before the stop, want 9", refused)
	}
}

// TestStartingInstanceHoldsNoRows: while one instance restarts, the healthy one takes every row;
// the restarting one is sent no more calls once it said so.
func TestStartingInstanceHoldsNoRows(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(300)...)
	starting := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{}, apiErr(greenapi.ClassStarting, 400, greenapi.ReasonStarting)
	})
	starting.state = func(n int) (string, error) {
		if n == 0 {
			return greenapi.StateAuthorized, nil
		}
		return greenapi.StateStarting, nil
	}
	good := newFake("2", func(greenapi.Target, int) (greenapi.Avatar, error) { return greenapi.Avatar{Available: yes()}, nil })
	cfg := config(starting, good)
	cfg.StartingTimeout = time.Hour
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.count(t, "status = 'done' AND attempts = 0"); got != 300 {
		t.Fatalf("done = %d, want 300 (%+v)", got, sum)
	}
	if n := starting.totalCalls(); n > cfg.Workers {
		t.Fatalf("the restarting instance got %d calls; at most its %d calls in flight may meet the restart", n, cfg.Workers)
	}
}

// blinkingStore fails every claim, write and renewal with a connection error while down says so.
type blinkingStore struct {
	*store.Store
	down                 func() bool
	claims, writes, errs atomic.Int32
}

var errConnLost = errors.New("read tcp 127.0.0.1:5432: read: connection reset by peer")

func (s *blinkingStore) ClaimAfter(ctx context.Context, owner string, token int64, n int, lease time.Duration, after store.Cursor) ([]store.Claimed, error) {
	s.claims.Add(1)
	if s.down() {
		s.errs.Add(1)
		return nil, errConnLost
	}
	return s.Store.ClaimAfter(ctx, owner, token, n, lease, after)
}

func (s *blinkingStore) Write(ctx context.Context, owner string, b store.Batch) (store.Written, error) {
	s.writes.Add(1)
	if s.down() {
		s.errs.Add(1)
		return store.Written{}, errConnLost
	}
	return s.Store.Write(ctx, owner, b)
}

func (s *blinkingStore) Renew(ctx context.Context, owner string, ls []store.Lease, lease time.Duration) ([]int64, error) {
	if s.down() {
		return nil, errConnLost
	}
	return s.Store.Renew(ctx, owner, ls, lease)
}

// TestDatabaseOutageWaitedOut: the database goes away mid-run and comes back within retry_for:
// the run does not stop, the answers received meanwhile are written, and every row is right.
func TestDatabaseOutageWaitedOut(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(300)...)
	var answers atomic.Int32
	var downSince atomic.Int64
	st := &blinkingStore{Store: b.store, down: func() bool {
		since := downSince.Load()
		return since != 0 && time.Since(time.Unix(0, since)) < 700*time.Millisecond
	}}
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		if answers.Add(1) == 50 {
			downSince.Store(time.Now().UnixNano())
		}
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Instances[0].RPS = 200 // the outage falls mid-run
	cfg.Sleep = nil
	cfg.RetryFor = 30 * time.Second
	sum, err := runOnce(t, context.Background(), st, cfg)
	if err != nil {
		t.Fatalf("a database back within retry_for must not stop the run: %v (%+v)", err, sum)
	}
	if st.errs.Load() == 0 {
		t.Fatal("no database call failed: the test did not cover the outage")
	}
	if got := b.count(t, "status = 'done' AND locked_by IS NULL"); got != 300 || sum.Done != 300 {
		t.Fatalf("done rows = %d (summary %d), want 300", got, sum.Done)
	}
	if api.totalCalls() != 300 {
		t.Fatalf("%d calls for 300 rows: answers received during the outage must not be asked again", api.totalCalls())
	}
	t.Logf("%d database calls failed; %d claims, %d writes", st.errs.Load(), st.claims.Load(), st.writes.Load())
}

// TestDatabaseRefusesForGood: an error PostgreSQL will repeat (a permission) is not retried: the
// run stops with ErrDatabase at once, and says how many answers it could not write.
func TestDatabaseRefusesForGood(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(50)...)
	cfg := config(newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		return greenapi.Avatar{Available: yes()}, nil
	}))
	cfg.RetryFor = time.Hour
	start := time.Now()
	sum, err := runOnce(t, context.Background(), permissionStore{b.store}, cfg)
	if !errors.Is(err, enrich.ErrDatabase) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("err = %v, want ErrDatabase with PostgreSQL's words", err)
	}
	if elapsed := time.Since(start); elapsed > 30*time.Second {
		t.Fatalf("took %s: a permission error must not be retried for retry_for", elapsed)
	}
	if sum.Unwritten == 0 || !strings.Contains(err.Error(), "answers could not be written") {
		t.Fatalf("err = %v (unwritten %d): it must say how many answers it could not write", err, sum.Unwritten)
	}
}

// permissionStore's writes fail as PostgreSQL refuses a role without UPDATE rights.
type permissionStore struct{ *store.Store }

func (p permissionStore) Write(context.Context, string, store.Batch) (store.Written, error) {
	return store.Written{}, &pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "permission denied for table contacts"}
}

// TestLeaseRenewedWhileCallsAreSlow: with a lease far shorter than the run, rows in hand are
// renewed, so no row is claimed twice and none is called twice.
func TestLeaseRenewedWhileCallsAreSlow(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.insertPhones(t, phones(40)...)
	first := make(chan struct{})
	var calls atomic.Int32
	api := newFake("1", func(greenapi.Target, int) (greenapi.Avatar, error) {
		if calls.Add(1) == 1 {
			close(first)
		}
		time.Sleep(100 * time.Millisecond)
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Workers = 2
	cfg.BatchSize = 40                 // every row is claimed at once, before the first call
	cfg.Lease = 600 * time.Millisecond // renewed every 200 ms; the run takes about 2 s
	// Another run takes any row whose lease lapses.
	var stolen atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-first:
		case <-ctx.Done():
			return
		}
		for ctx.Err() == nil {
			got, err := b.store.Claim(ctx, "thief", 1, 40, time.Hour)
			if err == nil {
				stolen.Add(int32(len(got)))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	sum, err := runOnce(t, context.Background(), b.store, cfg)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if stolen.Load() != 0 || sum.Lost != 0 || sum.Done != 40 {
		t.Fatalf("%d rows were claimed by another run while this one held them; %+v", stolen.Load(), sum)
	}
	for _, p := range phones(40) {
		if n := api.callsFor(p); n != 1 {
			t.Fatalf("%s called %d times", p, n)
		}
	}
}
