package store_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
)

// rowForms lists the table as "phone_number chat_id status" ("-" for NULL), sorted.
func rowForms(t *testing.T, b *bundle) []string {
	t.Helper()
	rs, err := b.pool.Query(b.ctx, "SELECT coalesce(phone_number, '-') || ' ' || coalesce(chat_id, '-') || ' ' || status FROM "+b.table)
	if err != nil {
		t.Fatalf("read rows: %v", err)
	}
	got, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read rows: %v", err)
	}
	slices.Sort(got)
	return got
}

// TestOneRowPerTarget: a phone number and its personal chatId are one target, by either
// Enqueue or EnqueueCopy, in one input or across inputs; a group chatId is its own target.
func TestOneRowPerTarget(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"Enqueue", "EnqueueCopy"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			enqueue := b.store.Enqueue
			if how == "EnqueueCopy" {
				enqueue = b.store.EnqueueCopy
			}
			steps := []struct {
				in   []store.NewContact
				want int64
			}{
				{[]store.NewContact{{PhoneNumber: "79001234567"}, {ChatID: "79001234567@c.us"}, {ChatID: "79001234567-1581234048@g.us"}}, 2},
				{[]store.NewContact{{ChatID: "79001234568@c.us"}}, 1},
				{[]store.NewContact{{PhoneNumber: "79001234568"}, {PhoneNumber: "79001234567"}, {ChatID: "79001234567@c.us"}}, 0},
			}
			for i, s := range steps {
				got, err := enqueue(b.ctx, s.in)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got != s.want {
					t.Errorf("step %d: inserted %d, want %d", i, got, s.want)
				}
			}
			want := []string{"- 79001234567-1581234048@g.us pending", "- 79001234568@c.us pending", "79001234567 - pending"}
			if got := rowForms(t, b); !slices.Equal(got, want) {
				t.Errorf("rows %q, want %q", got, want)
			}
		})
	}
}

// TestEnqueueCopyChecks: a contact with neither form, or with a NUL byte, fails the whole call
// before anything is written.
func TestEnqueueCopyChecks(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for _, cs := range [][]store.NewContact{
		{{PhoneNumber: "79001234567"}, {}},
		{{PhoneNumber: "79001234567"}, {ChatID: "7900\x00@c.us"}},
	} {
		if n, err := b.store.EnqueueCopy(b.ctx, cs); err == nil {
			t.Errorf("EnqueueCopy(%q) inserted %d, want an error", cs, n)
		}
	}
	if got := rowForms(t, b); len(got) != 0 {
		t.Errorf("rows %q, want none", got)
	}
	// A chunk of many rows, twice: the second time every row is a duplicate.
	cs := make([]store.NewContact, store.CopyChunkSize)
	for i := range cs {
		cs[i] = store.NewContact{PhoneNumber: fmt.Sprintf("79%09d", i)}
	}
	for i, want := range []int64{store.CopyChunkSize, 0} {
		if n, err := b.store.EnqueueCopy(b.ctx, cs); err != nil || n != want {
			t.Errorf("pass %d: inserted %d, %v; want %d", i, n, err, want)
		}
	}
}

// TestMigrateMergesTargets: migration 0006 on a table that already holds both forms of numbers
// keeps one row per target (the one with the most progress), gives it the other's form, and
// leaves every other row alone.
func TestMigrateMergesTargets(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Back to before 0006: its index gone and its version unrecorded.
	b.exec(t, `DROP INDEX contacts_target_key`)
	b.exec(t, `DELETE FROM enrich_schema_migrations WHERE table_name = 'contacts' AND version = 6`)
	b.exec(t, `INSERT INTO contacts (phone_number, chat_id, status, checked_at) VALUES
		('79000000001', NULL, 'pending', NULL),                 -- pair 1: the chat row is done
		(NULL, '79000000001@c.us', 'done', now()),
		('79000000002', NULL, 'done', now() - interval '1 day'), -- pair 2: the later check wins
		(NULL, '79000000002@c.us', 'done', now()),
		('79000000003', NULL, 'pending', NULL),                 -- pair 3: neither: the older row
		(NULL, '79000000003@c.us', 'pending', NULL),
		('79000000004', '79000000009@c.us', 'pending', NULL),   -- calls 79000000009: no pair
		('79000000005', NULL, 'failed', NULL),                  -- alone
		(NULL, '79000000005-1581234048@g.us', 'pending', NULL)`)
	applied, err := store.Migrate(b.ctx, b.pool, "contacts")
	if err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if !slices.Equal(applied, []string{"0006_target.sql"}) {
		t.Errorf("applied %v, want 0006_target.sql", applied)
	}
	want := []string{
		"- 79000000005-1581234048@g.us pending",
		"79000000001 79000000001@c.us done",
		"79000000002 79000000002@c.us done",
		"79000000003 79000000003@c.us pending",
		"79000000004 79000000009@c.us pending",
		"79000000005 - failed",
	}
	if got := rowForms(t, b); !slices.Equal(got, want) {
		t.Errorf("rows after the merge:\n got %q\nwant %q", got, want)
	}
	if n, err := b.store.Enqueue(b.ctx, []store.NewContact{{PhoneNumber: "79000000009"}, {ChatID: "79000000005@c.us"}}); err != nil || n != 0 {
		t.Errorf("enqueue of both forms after the merge: inserted %d, %v; want 0", n, err)
	}
	if err := b.store.Check(b.ctx); err != nil {
		t.Errorf("check after the merge: %v", err)
	}
}
