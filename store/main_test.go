package store_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// stubClock is Config.Now for tests: time moves only when a test says so.
type stubClock struct {
	mu  sync.Mutex
	now time.Time
}

func newStubClock() *stubClock {
	// An hour ahead of the database's clock, so rows inserted with the now() default are due.
	return &stubClock{now: time.Now().UTC().Truncate(time.Second).Add(time.Hour)}
}

func (c *stubClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stubClock) Advance(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// bundle is what most tests need: a store on its own migrated database and its clock.
type bundle struct {
	ctx   context.Context
	pool  *pgxpool.Pool
	store *store.Store
	clock *stubClock
	table string // quoted table, for direct SQL
	// tokens is the lease token of each row's latest claim by the claim helper; token is the
	// last token it used.
	tokens map[int64]int64
	token  int64
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool := pgtest.NewPool(t)
	clock := newStubClock()
	s, err := store.New(pool, store.Config{Now: clock.Now})
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	return &bundle{ctx: context.Background(), pool: pool, store: s, clock: clock, table: s.Table(), tokens: map[int64]int64{}}
}

// contact is a whole row, read back to check writes field by field.
type contact struct {
	ID              int64      `db:"id"`
	PhoneNumber     *string    `db:"phone_number"`
	ChatID          *string    `db:"chat_id"`
	Status          string     `db:"status"`
	ExistsWhatsapp  *bool      `db:"exists_whatsapp"`
	AvatarAvailable *bool      `db:"avatar_available"`
	URLAvatar       *string    `db:"url_avatar"`
	Reason          *string    `db:"reason"`
	Attempts        int        `db:"attempts"`
	NextAttemptAt   time.Time  `db:"next_attempt_at"`
	CheckedAt       *time.Time `db:"checked_at"`
	LockedBy        *string    `db:"locked_by"`
	LockedUntil     *time.Time `db:"locked_until"`
	LeaseToken      *int64     `db:"lease_token"`
	CreatedAt       time.Time  `db:"created_at"`
	UpdatedAt       time.Time  `db:"updated_at"`
	URLExpiresAt    *time.Time `db:"url_expires_at"`
	ExistsSource    *string    `db:"exists_source"` // migrations/0008
	AvatarSHA256    *string    `db:"avatar_sha256"` // migrations/0009
}

// String prints a row with pointers dereferenced, for failure messages.
func (c contact) String() string {
	v := reflect.ValueOf(c)
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		if i > 0 {
			b.WriteString(" ")
		}
		b.WriteString(v.Type().Field(i).Name + ":")
		if f.Kind() == reflect.Pointer {
			if f.IsNil() {
				b.WriteString("NULL")
				continue
			}
			f = f.Elem()
		}
		if tm, ok := f.Interface().(time.Time); ok {
			b.WriteString(tm.UTC().Format(time.RFC3339Nano))
			continue
		}
		fmt.Fprintf(&b, "%q", fmt.Sprint(f.Interface()))
	}
	b.WriteString("}")
	return b.String()
}

func (b *bundle) row(t *testing.T, id int64) contact {
	t.Helper()
	rows, err := b.pool.Query(b.ctx, "SELECT * FROM "+b.table+" WHERE id = $1", id)
	if err != nil {
		t.Fatalf("read row %d: %v", id, err)
	}
	c, err := pgx.CollectExactlyOneRow(rows, pgx.RowToStructByName[contact])
	if err != nil {
		t.Fatalf("read row %d: %v", id, err)
	}
	// Normalise times so rows compare with ==-like DeepEqual.
	c.NextAttemptAt = c.NextAttemptAt.UTC()
	c.CreatedAt = c.CreatedAt.UTC()
	c.UpdatedAt = c.UpdatedAt.UTC()
	c.CheckedAt = utcPtr(c.CheckedAt)
	c.LockedUntil = utcPtr(c.LockedUntil)
	c.URLExpiresAt = utcPtr(c.URLExpiresAt)
	return c
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// enqueuePhones adds n phone numbers and returns their ids in insertion order.
func (b *bundle) enqueuePhones(t *testing.T, n int) []int64 {
	t.Helper()
	cs := make([]store.NewContact, n)
	for i := range cs {
		cs[i].PhoneNumber = fmt.Sprintf("7900%07d", i)
	}
	got, err := b.store.Enqueue(b.ctx, cs)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	if got != int64(n) {
		t.Fatalf("enqueue inserted %d, want %d", got, n)
	}
	rows, err := b.pool.Query(b.ctx, "SELECT id FROM "+b.table+" ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// claim is Claim with a fresh token that fails the test on error; it remembers each row's token
// for lease.
func (b *bundle) claim(t *testing.T, owner string, n int, lease time.Duration) []store.Claimed {
	t.Helper()
	b.token++
	got, err := b.store.Claim(b.ctx, owner, b.token, n, lease)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	for _, c := range got {
		if c.Token != b.token {
			t.Fatalf("claimed row %d with token %d, want %d", c.ID, c.Token, b.token)
		}
		b.tokens[c.ID] = c.Token
	}
	return got
}

// lease is the Lease of row id's latest claim by the claim helper.
func (b *bundle) lease(id int64) store.Lease { return store.Lease{ID: id, Token: b.tokens[id]} }

func (b *bundle) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(b.ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func claimedIDs(cs []store.Claimed) map[int64]bool {
	m := make(map[int64]bool, len(cs))
	for _, c := range cs {
		m[c.ID] = true
	}
	return m
}

func ptr[T any](v T) *T { return &v }

func checkRow(t *testing.T, got, want contact) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("row %d:\n got %v\nwant %v", got.ID, got, want)
	}
}
