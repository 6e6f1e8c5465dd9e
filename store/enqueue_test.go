package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

func TestEnqueue(t *testing.T) {
	t.Parallel()

	t.Run("CountsAndDuplicates", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		steps := []struct {
			name string
			in   []store.NewContact
			want int64
		}{
			{"new", []store.NewContact{{PhoneNumber: "79000000001"}, {ChatID: "79000000002@c.us"}, {PhoneNumber: "79000000003", ChatID: "79000000003@c.us"}}, 3},
			{"duplicates within the input", []store.NewContact{{PhoneNumber: "79000000004"}, {PhoneNumber: "79000000004"}, {ChatID: "x@c.us"}, {ChatID: "x@c.us"}}, 2},
			{"duplicates of the table", []store.NewContact{{PhoneNumber: "79000000001"}, {ChatID: "79000000002@c.us"}, {PhoneNumber: "79000000005"}}, 1},
			{"either column clashing", []store.NewContact{{PhoneNumber: "79000000006", ChatID: "79000000003@c.us"}}, 0},
			{"empty", nil, 0},
		}
		total := int64(0)
		for _, s := range steps {
			got, err := b.store.Enqueue(b.ctx, s.in)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if got != s.want {
				t.Errorf("%s: inserted %d, want %d", s.name, got, s.want)
			}
			total += s.want
		}
		r, err := b.store.Status(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if r.ByStatus["pending"] != total || r.Due != total {
			t.Errorf("report %+v, want %d pending and due", r, total)
		}
		var nulls int
		if err := b.pool.QueryRow(b.ctx, "SELECT count(*) FROM "+b.table+" WHERE phone_number IS NULL OR chat_id IS NULL").Scan(&nulls); err != nil {
			t.Fatal(err)
		}
		if nulls != int(total)-1 {
			t.Errorf("%d rows with a NULL column, want %d: empty strings must be stored as NULL", nulls, total-1)
		}
	})

	t.Run("ManyChunks", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		cs := make([]store.NewContact, 2*store.ChunkSize+7)
		for i := range cs {
			cs[i].PhoneNumber = fmt.Sprintf("7%010d", i%(store.ChunkSize+1)) // repeats across chunks
		}
		got, err := b.store.Enqueue(b.ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		if got != store.ChunkSize+1 {
			t.Fatalf("inserted %d, want %d", got, store.ChunkSize+1)
		}
	})

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		_, err := b.store.Enqueue(b.ctx, []store.NewContact{{PhoneNumber: "79000000001"}, {}})
		if err == nil || !strings.Contains(err.Error(), "contact 1") {
			t.Fatalf("enqueue of an empty contact: %v, want an error naming contact 1", err)
		}
		if n, _ := b.store.Due(b.ctx); n != 0 {
			t.Fatalf("%d rows inserted from invalid input, want none", n)
		}
	})
}

// TestTableName: a plain identifier, schema-qualified or not, works end to end (quoted, so
// case-sensitive); anything else is refused, by name and with the fix, before it reaches SQL.
func TestTableName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	for _, table := range []string{"crm.contacts", "crm.My_Odd_Table", "Contacts_2", "_x", strings.Repeat("x", 63)} {
		t.Run(table, func(t *testing.T) {
			t.Parallel()
			pool := pgtest.Connect(t, pgtest.NewEmptyDB(t))
			if _, err := pool.Exec(ctx, `CREATE SCHEMA crm`); err != nil {
				t.Fatal(err)
			}
			if _, err := store.Migrate(ctx, pool, table); err != nil {
				t.Fatalf("migrate: %v", err)
			}
			s, err := store.New(pool, store.Config{Table: table})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := s.Enqueue(ctx, []store.NewContact{{PhoneNumber: "79000000001"}, {ChatID: "79000000002@c.us"}}); err != nil || n != 2 {
				t.Fatalf("enqueue: %d, %v", n, err)
			}
			got, err := s.Claim(ctx, "run-a", 1, 10, time.Minute)
			if err != nil || len(got) != 2 {
				t.Fatalf("claim: %v, %v", got, err)
			}
			if n, err := s.Complete(ctx, "run-a", []store.Done{{Lease: got[0].Lease}, {Lease: got[1].Lease}}); err != nil || n != 2 {
				t.Fatalf("complete: %d, %v", n, err)
			}
			r, err := s.Status(ctx)
			if err != nil || r.ByStatus["done"] != 2 {
				t.Fatalf("status: %+v, %v", r, err)
			}
			if plan, err := s.ExplainClaim(ctx, 10); err != nil || !strings.Contains(plan, "_due_idx") {
				t.Fatalf("explain: %v\n%s", err, plan)
			}
		})
	}

	t.Run("Invalid", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.NewPool(t)
		for _, tt := range []struct{ name, want string }{
			{"", "empty table name"},
			{"a.b.c", "3 dot-separated parts"},
			{"a..b", "3 dot-separated parts"},
			{".contacts", "empty part"},
			{"crm.", "empty part"},
			{strings.Repeat("x", 64), "longer than PostgreSQL's 63 bytes"},
			{"crm." + strings.Repeat("x", 64), "longer than PostgreSQL's 63 bytes"},
			{"contacts; drop table x", "not a plain identifier"},
			{"Robert'); DROP TABLE x;--", "not a plain identifier"},
			{`My "odd" table`, "not a plain identifier"},
			{`"contacts"`, "not a plain identifier"},
			{"Contacts Two", "not a plain identifier"},
			{"crm.contacts ", "not a plain identifier"},
			{" contacts", "not a plain identifier"},
			{"2contacts", "not a plain identifier"},
			{"crm.2contacts", "not a plain identifier"},
			{"con-tacts", "not a plain identifier"},
			{"con\x00tacts", "not a plain identifier"},
			{"kontakté", "not a plain identifier"},
			{"contacts\n", "not a plain identifier"},
		} {
			_, err := store.ParseTable(tt.name)
			if err == nil {
				t.Errorf("ParseTable accepted %q", tt.name)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, tt.want) || tt.name != "" && !strings.Contains(msg, fmt.Sprintf("%q", tt.name)) {
				t.Errorf("ParseTable(%q): %v; want it to name the input and say %q", tt.name, err, tt.want)
			}
			if msg := err.Error(); !strings.Contains(msg, ": use ") && !strings.Contains(msg, ": shorten it") {
				t.Errorf("ParseTable(%q): %v; want the fix in the message", tt.name, err)
			}
			if tt.name == "" {
				continue // New reads "" as the default table
			}
			if _, err := store.New(pool, store.Config{Table: tt.name}); err == nil {
				t.Errorf("New accepted table %q", tt.name)
			}
		}
	})

	t.Run("ParseTable", func(t *testing.T) {
		t.Parallel()
		for _, tt := range []struct{ in, sanitized string }{
			{"contacts", `"contacts"`},
			{"crm.contacts", `"crm"."contacts"`},
			{"CRM.Contacts_2", `"CRM"."Contacts_2"`},
			{"_", `"_"`},
		} {
			id, err := store.ParseTable(tt.in)
			if err != nil {
				t.Errorf("ParseTable(%q): %v", tt.in, err)
				continue
			}
			if got := id.Sanitize(); got != tt.sanitized {
				t.Errorf("ParseTable(%q) = %s, want %s", tt.in, got, tt.sanitized)
			}
		}
	})
}
