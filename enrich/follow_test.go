package enrich_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
)

// follower is a follow-mode run over a memstore in a synctest bubble, with its wake channel and
// the fake time of each row's first call.
type follower struct {
	r      *enrich.Runner
	m      *memstore.Store
	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	sum    enrich.Summary
	err    error

	mu     sync.Mutex
	called map[string]time.Time
}

// startFollower starts a follower with cfgFn applied to its config; it must run in a bubble.
func startFollower(t *testing.T, cfgFn func(*enrich.Config)) *follower {
	t.Helper()
	f := &follower{m: memstore.New(nil), wake: make(chan struct{}, 1), done: make(chan struct{}),
		called: map[string]time.Time{}}
	api := newFake("1", func(tg greenapi.Target, _ int) (greenapi.Avatar, error) {
		f.mu.Lock()
		if _, ok := f.called[tg.String()]; !ok {
			f.called[tg.String()] = time.Now()
		}
		f.mu.Unlock()
		return greenapi.Avatar{Available: yes()}, nil
	})
	cfg := config(api)
	cfg.Sleep = nil
	cfg.Follow = true
	cfg.Wake = f.wake
	if cfgFn != nil {
		cfgFn(&cfg)
	}
	r, err := enrich.NewRunner(f.m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.r = r
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		defer close(f.done)
		f.sum, f.err = r.Run(ctx)
	}()
	return f
}

// calledAt is the fake time of the first call for phone, and whether there was one.
func (f *follower) calledAt(phone string) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.called[phone]
	return at, ok
}

// notify wakes the follower as the listener does: never blocking.
func (f *follower) notify() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// stop cancels the follower (a signal) and returns how its run ended.
func (f *follower) stop(t *testing.T) (enrich.Summary, error) {
	t.Helper()
	f.cancel()
	<-f.done
	return f.sum, f.err
}

// TestFollowWakesOrPolls: a follower that ran out of rows stays up. A row inserted later is
// called at once when a notification comes, and at the next poll (within PollInterval of fake
// time, never later) when the notification is dropped. A signal then ends it as it ends a run.
func TestFollowWakesOrPolls(t *testing.T) {
	t.Parallel()
	const poll = 30 * time.Second
	for _, tc := range []struct {
		name   string
		notify bool
		// insertAt is when the row is inserted, from the start; want is when it is called.
		insertAt, want time.Duration
	}{
		{name: "notified", notify: true, insertAt: 45 * time.Second, want: 45 * time.Second},
		// Polls at 30 s and 60 s: the row inserted at 45 s waits for the second.
		{name: "dropped", notify: false, insertAt: 45 * time.Second, want: 2 * poll},
		{name: "dropped just after a poll", notify: false, insertAt: 2*poll + time.Millisecond, want: 3 * poll},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				f := startFollower(t, func(c *enrich.Config) { c.PollInterval = poll })
				time.Sleep(tc.insertAt)
				synctest.Wait()
				select {
				case <-f.done:
					t.Fatalf("the follower ended with nothing due: %v (%+v)", f.err, f.sum)
				default:
				}
				const phone = "79001234567"
				id := f.m.Enqueue(store.NewContact{PhoneNumber: phone})[0]
				if tc.notify {
					f.notify()
				}
				for {
					synctest.Wait()
					if r, _ := f.m.Row(id); r.Status == store.StatusDone {
						break
					}
					time.Sleep(time.Millisecond)
				}
				at, _ := f.calledAt(phone)
				if got := at.Sub(start); got < tc.want || got > tc.want+time.Millisecond {
					t.Errorf("the row was called %v after the start, inserted at %v: want %v", got, tc.insertAt, tc.want)
				}
				if delay := at.Sub(start) - tc.insertAt; delay > poll {
					t.Errorf("the row waited %v for its call, more than the poll interval %v", delay, poll)
				}
				sum, err := f.stop(t)
				if !errors.Is(err, enrich.ErrInterrupted) || sum.Done != 1 || sum.Stop != "interrupted" {
					t.Fatalf("after the stop: %v, %+v; want ErrInterrupted with the row done", err, sum)
				}
			})
		})
	}
}

// TestFollowIdleIsNoStall: the stall watchdog never fires on a follower with nothing held and
// nothing due, however long it waits (here 100 stall timeouts), and fires as in a run when it
// holds rows and nothing moves.
func TestFollowIdleIsNoStall(t *testing.T) {
	t.Parallel()
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			f := startFollower(t, func(c *enrich.Config) {
				c.StallTimeout = time.Minute
				c.PollInterval = time.Hour
			})
			time.Sleep(100 * time.Minute)
			synctest.Wait()
			select {
			case <-f.done:
				t.Fatalf("an idle follower ended: %v (%+v)", f.err, f.sum)
			default:
			}
			if err := f.r.Health(); err != nil {
				t.Errorf("an idle follower is unhealthy: %v", err)
			}
			id := f.m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})[0]
			f.notify()
			for {
				synctest.Wait()
				if r, _ := f.m.Row(id); r.Status == store.StatusDone {
					break
				}
				time.Sleep(time.Millisecond)
			}
			time.Sleep(10 * time.Minute)
			if sum, err := f.stop(t); !errors.Is(err, enrich.ErrInterrupted) || sum.Done != 1 {
				t.Fatalf("%v, %+v: want ErrInterrupted with the row done, not a stall", err, sum)
			}
		})
	})
	t.Run("held", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			m := memstore.New(nil)
			wake := make(chan struct{}, 1)
			hung := &hangingAPI{fakeAPI: newFake("1", nil), entered: func() {}}
			cfg := config(hung)
			cfg.Sleep = nil
			cfg.Follow, cfg.Wake, cfg.PollInterval = true, wake, time.Hour
			cfg.StallTimeout, cfg.ShutdownGrace = time.Minute, time.Second
			r, err := enrich.NewRunner(m, cfg)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var sum enrich.Summary
			go func() { defer close(done); sum, err = r.Run(context.Background()) }()
			time.Sleep(10 * time.Minute) // idle: no stall
			m.Enqueue(store.NewContact{PhoneNumber: "79001234567"})
			wake <- struct{}{}
			start := time.Now()
			time.Sleep(time.Minute - time.Second) // the row hangs in its call, short of the timeout
			synctest.Wait()
			if err := r.Health(); err != nil {
				t.Errorf("Health %v before stall_timeout", err)
			}
			<-done
			if !errors.Is(err, enrich.ErrStalled) || sum.Stop != "stalled" {
				t.Fatalf("err %v, stop %q: want ErrStalled with a row held in a call that never ends", err, sum.Stop)
			}
			if err := r.Health(); err != nil {
				t.Errorf("Health %v once the run has ended", err)
			}
			if took := time.Since(start); took < time.Minute || took > 2*time.Minute {
				t.Errorf("the stall was seen %v after the row was claimed, want within 1.1 stall timeouts (1m)", took)
			}
			if rows := m.Rows(); len(rows) != 1 || rows[0].LockedBy != "" || rows[0].Status != store.StatusPending {
				t.Errorf("rows after the stall %+v: want the row given back", rows)
			}
		})
	})
}

// TestNextDayStart: a follower whose instances spent their daily cap sleeps until the next day
// start, as greenapi.day_starts_at and time_zone say.
func TestNextDayStart(t *testing.T) {
	t.Parallel()
	utc := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		name string
		now  string
		day  store.DayStart
		want string
	}{
		{"midnight UTC", "2026-12-03T08:00:00Z", store.DayStart{}, "2026-12-04T00:00:00Z"},
		{"just before", "2026-12-03T23:59:59Z", store.DayStart{Zone: "UTC"}, "2026-12-04T00:00:00Z"},
		{"at the turn", "2026-12-04T00:00:00Z", store.DayStart{}, "2026-12-05T00:00:00Z"},
		{"offset, before it", "2026-12-03T02:00:00Z", store.DayStart{Offset: 3 * time.Hour}, "2026-12-03T03:00:00Z"},
		{"offset, after it", "2026-12-03T04:00:00Z", store.DayStart{Offset: 3 * time.Hour}, "2026-12-04T03:00:00Z"},
		{"zone", "2026-12-03T22:00:00Z", store.DayStart{Zone: "Europe/Moscow"}, "2026-12-04T21:00:00Z"},
		{"zone before midnight", "2026-12-03T20:00:00Z", store.DayStart{Zone: "Europe/Moscow"}, "2026-12-03T21:00:00Z"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := enrich.NextDayStart(utc(tc.now), tc.day)
			if err != nil {
				t.Fatal(err)
			}
			if !got.Equal(utc(tc.want)) {
				t.Errorf("NextDayStart(%s, %+v) = %v, want %s", tc.now, tc.day, got.UTC(), tc.want)
			}
		})
	}
}
