package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/enrich-dev/enrich/greenapi/simulator"
	"github.com/jackc/pgx/v5"
)

// naiveLoop is the script a user writes first: one row at a time, the row locked in a
// transaction held open across the API call.
//
//	BEGIN; SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1; POST getAvatar; UPDATE ...; COMMIT
//
// It runs for dur and returns how many rows it wrote and how long it took.
func naiveLoop(ctx context.Context, dbURL, apiURL string, in simulator.Instance, dur time.Duration) (int, time.Duration, error) {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	client := &http.Client{Timeout: time.Minute}
	url := apiURL + "/waInstance" + in.ID + "/getAvatar/" + in.Token
	rows := 0
	start := time.Now()
	for time.Since(start) < dur {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return rows, 0, err
		}
		var id int64
		var phone string
		err = tx.QueryRow(ctx, `SELECT id, phone_number FROM contacts WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED`).Scan(&id, &phone)
		if errors.Is(err, pgx.ErrNoRows) {
			_ = tx.Rollback(ctx)
			break
		}
		if err != nil {
			return rows, 0, err
		}
		body, _ := json.Marshal(map[string]string{"chatId": phone + "@c.us"})
		resp, err := client.Post(url, "application/json", bytes.NewReader(body))
		if err != nil {
			return rows, 0, err
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		status, avatar := "done", ""
		switch resp.StatusCode {
		case http.StatusOK:
			var a struct {
				URLAvatar string `json:"urlAvatar"`
			}
			_ = json.Unmarshal(b, &a)
			avatar = a.URLAvatar
		case http.StatusBadRequest:
			status = "failed"
		default:
			return rows, 0, fmt.Errorf("naive loop: HTTP %d: %s", resp.StatusCode, b)
		}
		if _, err := tx.Exec(ctx, `UPDATE contacts SET status = $2, url_avatar = $3, checked_at = now(), updated_at = now() WHERE id = $1`,
			id, status, avatar); err != nil {
			return rows, 0, err
		}
		if err := tx.Commit(ctx); err != nil {
			return rows, 0, err
		}
		rows++
	}
	return rows, time.Since(start), nil
}

// naiveCase is one latency the naive loop and enrich are compared at.
type naiveCase struct {
	name    string
	latency time.Duration
	simRPS  float64 // -1: unlimited
	rps     float64 // enrich's rps
	rows    int
}

type naivePair struct {
	Naive   float64 `json:"naive_rows_per_s"`
	Enrich  float64 `json:"enrich_rows_per_s"`
	SpeedUp float64 `json:"speed_up"`
}

// naive: the naive loop against enrich (default workers and batch) on the same setup, for the
// same time, at 0 latency (no limit) and at 300 ms (one instance at 10 rps).
func (e *env) naive(ctx context.Context, d *details, runs int) ([]Figure, error) {
	dur := 10 * time.Second
	big := 200_000
	if e.quick {
		dur, big = 2*time.Second, 50_000
	}
	cases := []naiveCase{
		{name: "0 ms latency, no limit", latency: 0, simRPS: -1, rps: ceilingRPS, rows: big},
		{name: "300 ms latency, 10 rps", latency: 300 * time.Millisecond, simRPS: budgetRPS, rps: budgetRPS, rows: 2000},
	}
	var figs []Figure
	all := map[string][]naivePair{}
	for _, c := range cases {
		fmt.Fprintf(e.log, "   %s: %d runs of %v each\n", c.name, runs, dur)
		tpl, err := e.loadTable(ctx, "naive", c.rows)
		if err != nil {
			return nil, err
		}
		pairs, err := e.naiveCase(ctx, c, tpl, runs, dur)
		_ = e.dropDB(tpl.name)
		if err != nil {
			return nil, err
		}
		all[c.name] = pairs
		var nv, en, su []float64
		for _, p := range pairs {
			nv, en, su = append(nv, p.Naive), append(en, p.Enrich), append(su, p.SpeedUp)
		}
		figs = append(figs,
			Figure{Scenario: "naive", Name: c.name + ": naive loop", Value: median(nv), Unit: "rows/s", N: runs, Runs: rounded(nv),
				Note: "one row per transaction, held across the call; ORDER BY id over a table whose done rows stay in front"},
			Figure{Scenario: "naive", Name: c.name + ": enrich", Value: median(en), Unit: "rows/s", N: runs, Runs: rounded(en),
				Note: fmt.Sprintf("default workers and batch_size, max_duration %v; rows ÷ process wall time", dur)},
			Figure{Scenario: "naive", Name: c.name + ": enrich speed-up", Value: median(su), Unit: "×", N: runs, Runs: rounded(su),
				Note: "median of per-run ratios"},
		)
	}
	d.set("naive", all)
	return figs, nil
}

func (e *env) naiveCase(ctx context.Context, c naiveCase, tpl table, runs int, dur time.Duration) ([]naivePair, error) {
	cfg := simulator.Config{Seed: 1, Instances: instances(1, c.simRPS), LatencyMedian: c.latency}
	var pairs []naivePair
	for range runs {
		var p naivePair
		// The naive loop.
		t, err := e.clone(ctx, tpl)
		if err != nil {
			return nil, err
		}
		ss, err := serveSim(cfg, false)
		if err != nil {
			return nil, err
		}
		n, took, err := naiveLoop(ctx, t.url, ss.url, cfg.Instances[0], dur)
		ss.close()
		_ = e.dropDB(t.name)
		if err != nil {
			return nil, err
		}
		p.Naive = float64(n) / took.Seconds()
		// enrich on the same setup.
		if t, err = e.clone(ctx, tpl); err != nil {
			return nil, err
		}
		if ss, err = serveSim(cfg, false); err != nil {
			return nil, err
		}
		r, err := e.runEnrich(ctx, t.url, enrichConfig{apiURL: ss.url, instances: cfg.Instances, rps: c.rps, maxDuration: dur})
		ss.close()
		_ = e.dropDB(t.name)
		if err != nil {
			return nil, err
		}
		p.Enrich = float64(r.sum.finished()) / r.wall.Seconds()
		p.SpeedUp = p.Enrich / p.Naive
		fmt.Fprintf(e.log, "   naive %.1f rows/s, enrich %.1f rows/s: %.1f×\n", p.Naive, p.Enrich, p.SpeedUp)
		pairs = append(pairs, p)
	}
	return pairs, nil
}
