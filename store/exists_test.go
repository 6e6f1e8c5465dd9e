package store_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/store"
)

// TestExistsUnknown: migrations/0014 lets exists_source say 'avatar', 'unchecked' and
// 'badPhoneNumber' (and nothing else); the done personal rows whose existence is unknown (bar
// those CheckWhatsapp refused, and groups) are what Refresh takes up again with ExistsUnknown,
// what Status and Overview count, and what an export counts.
func TestExistsUnknown(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// id: what the row is.
	b.exec(t, `INSERT INTO `+b.table+` (phone_number, chat_id, status, exists_whatsapp, exists_source, checked_at) VALUES
		('79000000001', NULL, 'done', NULL, 'unchecked', now()),        -- 1 unknown: a run left it unchecked
		('79000000002', NULL, 'done', NULL, 'unchecked', now()),        -- 2 unknown
		('79000000003', NULL, 'done', NULL, NULL, now()),               -- 3 unknown: answered before 0014
		(NULL, '79000000004@c.us', 'done', NULL, 'unchecked', now()),   -- 4 unknown: a personal chat
		('79000000005', NULL, 'done', NULL, 'badPhoneNumber', now()),   -- 5 refused by CheckWhatsapp: never again
		(NULL, '79000000006-1581234048@g.us', 'done', NULL, NULL, now()), -- 6 a group: not checked
		('79000000007', NULL, 'done', true, 'avatar', now()),           -- 7 known
		('79000000008', NULL, 'done', false, 'checkWhatsapp', now()),   -- 8 known
		('79000000009', NULL, 'pending', NULL, NULL, now()),            -- 9 not answered yet
		('79000000010', NULL, 'failed', NULL, NULL, now())              -- 10 failed`)
	if _, err := b.pool.Exec(b.ctx, `UPDATE `+b.table+` SET exists_source = 'guess' WHERE id = 7`); err == nil ||
		!strings.Contains(err.Error(), "exists_source_check") {
		t.Errorf("exists_source 'guess' accepted or refused by another check: %v", err)
	}

	r, err := b.store.Status(b.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.ExistsUnknown != 4 || r.Unchecked != 3 {
		t.Errorf("Status: exists unknown %d, unchecked %d; want 4 and 3", r.ExistsUnknown, r.Unchecked)
	}
	for _, o := range []store.StatusOptions{{Exact: true}, {ExactBelow: 3}} { // counted, then estimated and capped at 3
		ov, err := b.store.Overview(b.ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		want, capped := int64(4), false
		if !o.Exact {
			want, capped = 3, true
		}
		if ov.ExistsUnknown != want || ov.ExistsUnknownCapped != capped {
			t.Errorf("Overview %+v: exists unknown %d (capped %v), want %d (%v)", o, ov.ExistsUnknown, ov.ExistsUnknownCapped, want, capped)
		}
	}

	var out bytes.Buffer
	c, err := b.store.ExportCounted(b.ctx, &out, store.ExportFilter{Format: store.FormatCSV})
	if err != nil || c.Rows != 10 || c.ExistsUnknown != 4 {
		t.Errorf("export: %+v, %v; want 10 rows, 4 with existence unknown", c, err)
	}
	if strings.Contains(out.String(), "exists_source") {
		t.Errorf("export grew a column:\n%s", out.String())
	}

	if n, err := b.store.Refresh(b.ctx, store.RefreshPolicy{}); err != nil || n != 0 {
		t.Fatalf("Refresh without ExistsUnknown moved %d rows (%v)", n, err)
	}
	if n, err := b.store.Refresh(b.ctx, store.RefreshPolicy{ExistsUnknown: true}); err != nil || n != 4 {
		t.Fatalf("Refresh with ExistsUnknown moved %d rows (%v), want 4", n, err)
	}
	var ids []int64
	rows, err := b.pool.Query(b.ctx, `SELECT id FROM `+b.table+` WHERE status = 'pending' AND id <> 9 ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if len(ids) != 4 || ids[0] != 1 || ids[1] != 2 || ids[2] != 3 || ids[3] != 4 {
		t.Errorf("pending after the refresh: %v, want [1 2 3 4]", ids)
	}
	// They are claimable: the claim index is unchanged and they are in it now.
	if got := b.claim(t, "later-run", 10, 60e9); len(got) != 5 {
		t.Errorf("a later run claims %d rows, want 5 (the 4 and the pending one)", len(got))
	}
	if r, err := b.store.Status(b.ctx); err != nil || r.ExistsUnknown != 0 {
		t.Errorf("after the refresh: exists unknown %d (%v), want 0", r.ExistsUnknown, err)
	}
}
