package store_test

import (
	"testing"

	"github.com/enrich-dev/enrich/store"
)

// TestImport: an Import counts targets earlier in it as present, writes nothing until Commit,
// and nothing at all when rolled back (enrich enqueue --dry-run, --max-rejected).
func TestImport(t *testing.T) {
	t.Parallel()
	b := setup(t)
	if _, err := b.store.EnqueueCopy(b.ctx, []store.NewContact{{PhoneNumber: "79000000001"}}); err != nil {
		t.Fatal(err)
	}
	chunks := [][]store.NewContact{
		{{PhoneNumber: "79000000001"}, {PhoneNumber: "79000000002"}, {ChatID: "79000000003@c.us"}},
		{{PhoneNumber: "79000000002"}, {PhoneNumber: "79000000003"}, {PhoneNumber: "79000000004"}},
	}
	for _, commit := range []bool{false, true} {
		im, err := b.store.BeginImport(b.ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, cs := range chunks {
			n, err := im.EnqueueCopy(b.ctx, cs)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, n)
		}
		if got[0] != 2 || got[1] != 1 {
			t.Errorf("commit %t: inserted %v per chunk, want [2 1] (the second chunk's first two are the first's)", commit, got)
		}
		if commit {
			err = im.Commit(b.ctx)
		} else {
			err = im.Rollback(b.ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		want := 1
		if commit {
			want = 4
		}
		if rows := rowForms(t, b); len(rows) != want {
			t.Errorf("commit %t: rows %q, want %d", commit, rows, want)
		}
		if err := im.Rollback(b.ctx); err != nil {
			t.Errorf("Rollback after the end: %v", err)
		}
	}
}
