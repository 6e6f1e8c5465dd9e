package enrich

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/enrich-dev/enrich/greenapi"
	"github.com/enrich-dev/enrich/internal/memstore"
	"github.com/enrich-dev/enrich/store"
)

// trimRefused is a budget whose trims fail, as when the database refuses that one statement.
type trimRefused struct{ *memstore.Budget }

func (trimRefused) Trim(context.Context, string, string, time.Time, time.Time) (bool, error) {
	return false, errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
}

// quietAPI is an instance the test never calls.
type quietAPI struct{}

func (quietAPI) ID() string { return "1101000001" }
func (quietAPI) GetAvatar(context.Context, greenapi.Target) (greenapi.Avatar, error) {
	return greenapi.Avatar{}, errors.New("not called")
}
func (quietAPI) GetStateInstance(context.Context) (string, error) {
	return greenapi.StateAuthorized, nil
}
func (quietAPI) CheckWhatsapp(context.Context, greenapi.Target) (bool, error) {
	return false, errors.New("not called")
}

// TestFailedTrimFreesTheInstance: a trim at the end of the rows (Budget.Trim) is the run's own
// saving, not a step its rows need. When the database refuses it, the slots given up here go
// unsent and counted as such, and nothing else: the instance is no longer held back from
// reserving (no block is reserved while a trim is in flight), and its dispatcher is woken.
// A trim whose failure left it held back would stop the instance for the rest of the run.
func TestFailedTrimFreesTheInstance(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		r, err := NewRunner(memstore.New(nil), Config{Owner: "me", Budget: trimRefused{memstore.NewBudget(nil)},
			Instances: []Instance{{API: quietAPI{}, RPS: 10}}})
		if err != nil {
			t.Fatal(err)
		}
		r.dbCtx = context.Background() // as Run sets it
		c := r.instances[0]
		now := time.Now()
		iv := 101 * time.Millisecond
		c.mu.Lock()
		c.shared.refill(store.Grant{Start: now, Now: now, Interval: iv, Slots: 10, Rate: 10, Headroom: paceHeadroom}, now, 0)
		c.trimLocked(now.Add(endAhead))
		trimming, n, unsent, changed := c.shared.trimming, c.shared.n, c.shared.unsent, c.changed
		c.mu.Unlock()
		if !trimming || n != 2 || unsent != 8 {
			t.Fatalf("trimmed to %v ahead: trimming %v, %d slots kept, %d unsent; want in flight, 2, 8", endAhead, trimming, n, unsent)
		}
		r.reserving.Wait()
		select {
		case <-changed:
		default:
			t.Error("the dispatcher was not woken when the trim failed")
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.shared.trimming {
			t.Error("after a failed trim the instance is still held back from reserving")
		}
		if c.shared.n != 2 || c.shared.unsent != 8 {
			t.Errorf("after a failed trim: %d slots kept, %d unsent; want 2, 8", c.shared.n, c.shared.unsent)
		}
	})
}
