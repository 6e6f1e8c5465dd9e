package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
)

// TestStatusInstances: status shows each instance of the shared budget, in the table and in
// --json alike: its state, rate and headroom, slots used today of the config's max_per_day,
// quota spent, last answer and a pause under way; an instance the config names but no run used
// shows as unused, and one the config does not name has no rps or cap.
func TestStatusInstances(t *testing.T) {
	t.Parallel()
	const (
		capped    = "1101000001" // used its 10 of max_per_day 10
		paused    = "1101000002" // a 429 with Retry-After 1 h
		unused    = "1101000003" // in the config only
		quota     = "1101000004" // answered 466 today; not in the config
		throttled = "1101000005" // rate cut to 4 of rps 10, not climbed back yet
		ready     = "1101000006"
	)
	ctx := context.Background()
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	dayStarts := farFromDayTurn()
	h, _ := strconv.Atoi(dayStarts[:2])
	m, _ := strconv.Atoi(dayStarts[3:])
	day := store.DayStart{Zone: "UTC", Offset: time.Duration(h)*time.Hour + time.Duration(m)*time.Minute}
	p := enrich.SharedPolicy()
	reserve := func(id string, want int, perDay int64, answered bool) {
		t.Helper()
		if _, err := st.Reserve(ctx, store.BudgetRequest{Instance: id, Owner: "test", MaxRPS: 10, Want: want, PerDay: perDay,
			Day: day, Answered: answered}, p); err != nil {
			t.Fatal(err)
		}
	}
	reserve(capped, 10, 10, true)
	reserve(paused, 3, 0, false)
	if err := st.Throttled(ctx, paused, time.Now().Add(-time.Hour), 10, time.Hour, p); err != nil {
		t.Fatal(err)
	}
	reserve(quota, 2, 0, true)
	if err := st.QuotaSpent(ctx, quota, day); err != nil {
		t.Fatal(err)
	}
	reserve(throttled, 1, 0, true)
	// A cut the quiet period has not passed since, however slow the test: cut_at ahead.
	if _, err := pool.Exec(ctx, `UPDATE enrich.enrich_instances SET rate = 4, cut_at = now() + interval '1 hour' WHERE instance_id = $1`, throttled); err != nil {
		t.Fatal(err)
	}
	reserve(ready, 1, 0, true)

	var conf strings.Builder
	fmt.Fprintf(&conf, "[greenapi]\nday_starts_at = %q\ntime_zone = \"UTC\"\n\n", dayStarts)
	for _, in := range []struct {
		id     string
		perDay int
	}{{capped, 10}, {paused, 0}, {unused, 100}, {throttled, 0}, {ready, 50}} {
		fmt.Fprintf(&conf, "[[greenapi.instance]]\nid = %q\ntoken = \"tok-%s\"\nrps = 10\nmax_per_day = %d\n\n", in.id, in.id, in.perDay)
	}
	cfgPath := filepath.Join(t.TempDir(), "enrich.toml")
	if err := os.WriteFile(cfgPath, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DATABASE_URL": dbURL}
	before := time.Now()
	out, stderr, err := runCLI(t, env, "status", "--config", cfgPath)
	if err != nil {
		t.Fatalf("status: %v\n%s", err, stderr)
	}
	jout, stderr, err := runCLI(t, env, "status", "--config", cfgPath, "--json")
	if err != nil {
		t.Fatalf("status --json: %v\n%s", err, stderr)
	}
	t.Logf("status:\n%s", out)
	var j statusJSON
	dec := json.NewDecoder(strings.NewReader(jout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		t.Fatalf("status --json: %v\n%s", err, jout)
	}
	tab := parseStatusTable(t, out)

	wantDay := time.Now().UTC().Add(-day.Offset).Format(time.DateOnly)
	if j.InstancesDay != wantDay || tab.instancesDay != wantDay {
		t.Errorf("instances' day %q in JSON, %q in the table; want %s (the day starts at %s UTC)", j.InstancesDay, tab.instancesDay, wantDay, dayStarts)
	}
	f := func(v float64) *float64 { return &v }
	n := func(v int64) *int64 { return &v }
	want := []struct {
		id, state     string
		configured    bool
		rps           *float64
		perDay        *int64
		rate          *float64 // nil: unused; not checked for the paused one (its rate climbs back under the pause)
		used          int64
		quotaSpent    bool
		answered      bool
		pausedMinutes int
	}{
		{id: capped, state: "capped", configured: true, rps: f(10), perDay: n(10), rate: f(10), used: 10, answered: true},
		{id: paused, state: "paused", configured: true, rps: f(10), perDay: n(0), used: 3, pausedMinutes: 60},
		{id: unused, state: "unused", configured: true, rps: f(10), perDay: n(100)},
		{id: quota, state: "quota_spent", rate: f(10), used: 2, quotaSpent: true, answered: true},
		{id: throttled, state: "throttled", configured: true, rps: f(10), perDay: n(0), rate: f(4), used: 1, answered: true},
		{id: ready, state: "ready", configured: true, rps: f(10), perDay: n(50), rate: f(10), used: 1, answered: true},
	}
	if len(j.Instances) != len(want) || len(tab.instances) != len(want) {
		t.Fatalf("%d instances in JSON, %d in the table; want %d\n%s", len(j.Instances), len(tab.instances), len(want), jout)
	}
	eqF := func(a, b *float64) bool { return (a == nil) == (b == nil) && (a == nil || *a == *b) }
	for i, w := range want {
		ji, ti := j.Instances[i], tab.instances[i]
		if ji.ID != w.id || ti["ID"] != w.id {
			t.Errorf("instance %d: %s in JSON, %s in the table; want %s (by id)", i, ji.ID, ti["ID"], w.id)
			continue
		}
		if ji.State != w.state || ji.Configured != w.configured || !eqF(ji.RPS, w.rps) ||
			(ji.MaxPerDay == nil) != (w.perDay == nil) || ji.MaxPerDay != nil && *ji.MaxPerDay != *w.perDay ||
			ji.UsedToday != w.used || ji.QuotaSpent != w.quotaSpent || (ji.AnsweredAt != nil) != w.answered {
			t.Errorf("%s: JSON %+v; want %+v", w.id, ji, w)
		}
		if w.state != "paused" && !eqF(ji.Rate, w.rate) {
			t.Errorf("%s: rate %v, want %v", w.id, ji.Rate, w.rate)
		}
		if w.state == "unused" && (ji.Headroom != nil || ji.UpdatedAt != nil) || w.state != "unused" && (ji.Headroom == nil || *ji.Headroom < enrich.SharedPolicy().Headroom) {
			t.Errorf("%s: headroom %v, updated_at %v", w.id, ji.Headroom, ji.UpdatedAt)
		}
		if w.pausedMinutes > 0 {
			if ji.PausedUntil == nil || ji.PausedUntil.Sub(before) < time.Duration(w.pausedMinutes-1)*time.Minute ||
				ji.PausedUntil.Sub(before) > time.Duration(w.pausedMinutes+1)*time.Minute {
				t.Errorf("%s: paused until %v, want about %d min after %v", w.id, ji.PausedUntil, w.pausedMinutes, before)
			}
		} else if ji.PausedUntil != nil {
			t.Errorf("%s: paused until %v, want no pause", w.id, ji.PausedUntil)
		}

		// The table says the same.
		str := func(p *float64) string {
			if p == nil {
				return "-"
			}
			return strconv.FormatFloat(*p, 'g', 4, 64)
		}
		perDay := "-"
		if ji.MaxPerDay != nil {
			perDay = strconv.FormatInt(*ji.MaxPerDay, 10)
			if *ji.MaxPerDay == 0 {
				perDay = "none"
			}
		}
		quotaCell := map[bool]string{true: "yes", false: "no"}[ji.QuotaSpent]
		answered := "-"
		switch {
		case ji.AnsweredAt != nil:
			answered = ji.AnsweredAt.Format(time.RFC3339)
		case ji.Rate != nil:
			answered = "never"
		}
		pausedCell := "-"
		if ji.PausedUntil != nil {
			pausedCell = ji.PausedUntil.Format(time.RFC3339)
		}
		cells := map[string]string{"STATE": ji.State, "RATE": str(ji.Rate), "RPS": str(ji.RPS), "HEADROOM": str(ji.Headroom),
			"USED_TODAY": strconv.FormatInt(ji.UsedToday, 10), "MAX_PER_DAY": perDay, "QUOTA_SPENT": quotaCell,
			"LAST_ANSWER": answered, "PAUSED_UNTIL": pausedCell}
		for col, v := range cells {
			if ti[col] != v {
				t.Errorf("%s: %s is %q in the table, the JSON says %q", w.id, col, ti[col], v)
			}
		}
	}

	// Without a config: the budget's instances, no rps or cap, days from 00:00 UTC.
	jout, stderr, err = runCLI(t, env, "status", "--json")
	if err != nil {
		t.Fatalf("status --json without a config: %v\n%s", err, stderr)
	}
	var bare statusJSON
	if err := json.Unmarshal([]byte(jout), &bare); err != nil {
		t.Fatal(err)
	}
	if len(bare.Instances) != 5 || bare.InstancesDay != time.Now().UTC().Format(time.DateOnly) {
		t.Fatalf("without a config: %d instances on %s; want the budget's 5 on today (UTC)", len(bare.Instances), bare.InstancesDay)
	}
	for _, in := range bare.Instances {
		if in.Configured || in.RPS != nil || in.MaxPerDay != nil || in.State == "capped" || in.State == "unused" {
			t.Errorf("without a config: %+v; want no rps, no cap, so never capped", in)
		}
	}
}
