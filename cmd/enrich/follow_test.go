package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgbouncer"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
)

// waitSeen waits for text in a process's output, or fails the test after within.
func waitSeen(t *testing.T, out *output, text string, within time.Duration) {
	t.Helper()
	select {
	case <-out.seen(text):
	case <-time.After(within):
		t.Fatalf("%q not logged within %v:\n%s", text, within, out)
	}
}

// waitDone polls the table until the row with phone number phone is done; a generous deadline,
// not a timing assertion.
func (b procBundle) waitDone(t *testing.T, phone string, out *output) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for b.count(t, "phone_number = '"+phone+"' AND status = 'done' AND locked_by IS NULL") != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("row %s not done within 60 s; logs:\n%s", phone, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFollowAnswersNewRows runs `enrich run --follow` with a poll interval of an hour against the
// simulator and a real PostgreSQL with nothing due: it stays up; rows inserted after it started,
// by `enrich enqueue` and by a plain SQL INSERT (migration 0016's trigger), are answered within
// the test's deadline, so a notification woke it (the poll would come in an hour), also after
// the listener's connection was cut; SIGTERM then ends it like a run: exit 143 with its JSON
// summary.
func TestFollowAnswersNewRows(t *testing.T) {
	t.Parallel()
	inst, simCfg := opsInstance("tok-follow")
	b := setupProc(t, 0, inst, simCfg, "", 1<<30)
	cmd, logs := b.command(t, "run", "--follow", "--poll-interval", "1h", "--log-format", "json",
		"--log-level", "debug", "--progress", "off", "--summary", "json", "--metrics-addr", "127.0.0.1:0")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
	}()
	waitSeen(t, logs, `"message":"follow: listening for rows becoming due"`, 60*time.Second)
	waitSeen(t, logs, `"message":"follow: nothing due: waiting for a notification or the poll"`, 60*time.Second)

	// A first row takes up the wake every listener gives itself once it listens; the two after it
	// can only have been woken by their own notifications.
	ctx := context.Background()
	insert := func(phone string) {
		t.Helper()
		if _, err := b.pool.Exec(ctx, `INSERT INTO contacts (phone_number) VALUES ($1)`, phone); err != nil {
			t.Fatal(err)
		}
	}
	insert("79010000001")
	b.waitDone(t, "79010000001", logs)

	enq, enqOut := b.command(t, "enqueue", "-")
	enq.Stdin = strings.NewReader("79010000002\n")
	if err := enq.Run(); err != nil {
		t.Fatalf("enqueue: %v\n%s", err, enqOut)
	}
	b.waitDone(t, "79010000002", logs)

	insert("79010000003")
	b.waitDone(t, "79010000003", logs)

	// The listener's connection is cut (a failover, an idle-session killer): it listens again,
	// and the next row is still answered long before the hour's poll.
	if _, err := b.pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN %'`); err != nil {
		t.Fatal(err)
	}
	waitSeen(t, logs, "follow: listening for notifications failed", 60*time.Second)
	deadline := time.Now().Add(60 * time.Second)
	for strings.Count(logs.String(), `"message":"follow: listening for rows becoming due"`) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the listener did not listen again within 60 s:\n%s", logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	insert("79010000004")
	b.waitDone(t, "79010000004", logs)

	if n := strings.Count(logs.String(), `"by":"notification"`); n < 3 {
		t.Errorf("the follower was woken by %d notifications, want one per row:\n%s", n, logs)
	}
	if strings.Contains(logs.String(), `"by":"poll"`) {
		t.Errorf("the follower polled, with a poll interval of an hour:\n%s", logs)
	}
	checkHealthz(t, logs)

	s := stopFollower(t, cmd, exited, &stdout, logs)
	if !s.Success || s.ExitCode != 143 || s.Stop != "interrupted" || s.Done != 4 {
		t.Errorf("summary after SIGTERM %+v: want success, exit_code 143, stop interrupted, 4 rows done", s)
	}
	if n := b.count(t, "locked_by IS NOT NULL"); n != 0 {
		t.Errorf("%d rows still leased after the follower ended", n)
	}
}

// checkHealthz reads /healthz from the metrics server the process logged and wants 200: an idle
// follower, and one waiting for the day to turn, is healthy.
func checkHealthz(t *testing.T, logs *output) {
	t.Helper()
	var addr string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, `"message":"serving metrics at /metrics"`) {
			var l struct{ Addr string }
			if err := json.Unmarshal([]byte(line), &l); err == nil {
				addr = l.Addr
			}
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address logged:\n%s", logs)
	}
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("/healthz: %d %q, want 200 ok", resp.StatusCode, body)
	}
}

// TestFollowBehindTransactionPooler: through a real PgBouncer in transaction mode
// (database.pooler = "transaction") the follower does not LISTEN (a pooled server session is not
// the client's); it says so once and finds new rows by polling, within run.poll_interval.
func TestFollowBehindTransactionPooler(t *testing.T) {
	t.Parallel()
	inst, simCfg := opsInstance("tok-follow-pooler")
	b := setupProc(t, 0, inst, simCfg, "[database]\npooler = \"transaction\"\n\n[run]\nfollow = true\npoll_interval = \"1s\"\n", 1<<30)
	bouncerURL := pgbouncer.Start(t, b.dbURL, pgbouncer.Options{Mode: pgbouncer.ModeTransaction, PoolSize: 4})
	cmd, logs := b.command(t, "run", "--log-format", "json", "--log-level", "debug", "--progress", "off", "--summary", "log")
	cmd.Env = append(cmd.Env, "DATABASE_URL="+bouncerURL) // the last value of a name is the one the process sees
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	waitSeen(t, logs, "LISTEN does not work", 60*time.Second)
	if u, err := url.Parse(bouncerURL); err != nil || !strings.Contains(logs.String(), `"port":`+u.Port()+`,`) {
		t.Fatalf("the follower is not connected through PgBouncer (%s, %v):\n%s", bouncerURL, err, logs)
	}
	waitSeen(t, logs, `"message":"follow: nothing due: waiting for a notification or the poll"`, 60*time.Second)
	if _, err := b.pool.Exec(context.Background(), `INSERT INTO contacts (phone_number) VALUES ('79010000009')`); err != nil {
		t.Fatal(err)
	}
	b.waitDone(t, "79010000009", logs)
	if strings.Contains(logs.String(), `"by":"notification"`) || !strings.Contains(logs.String(), `"by":"poll"`) {
		t.Errorf("behind a transaction pooler the follower must poll, not listen:\n%s", logs)
	}
	if n := strings.Count(logs.String(), "LISTEN does not work"); n != 1 {
		t.Errorf("the fallback to polling was logged %d times, want once", n)
	}
	sigterm143(t, cmd, exited, logs)
}

// TestFollowDailyCapWaitsForTheDay: a follower whose only instance spent its max_per_day does not
// exit (a Deployment would restart it into the same spent cap, again and again): it waits for the
// day to turn; SIGTERM during the wait ends it like a run, exit 143 with its summary.
func TestFollowDailyCapWaitsForTheDay(t *testing.T) {
	t.Parallel()
	inst, simCfg := opsInstance("tok-follow-cap")
	b := setupProc(t, 5, inst, simCfg, "max_per_day = 2\n\n[run]\nfollow = true\n", 1<<30)
	cmd, logs := b.command(t, "run", "--log-format", "json", "--progress", "off", "--summary", "json",
		"--stall-timeout", "1s", "--metrics-addr", "127.0.0.1:0")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() { _ = cmd.Process.Kill() }()
	waitSeen(t, logs, "every instance spent its daily cap: waiting for the day to turn", 60*time.Second)
	// Waiting for the day is no stall: /healthz stays 200 past run.stall_timeout (1 s), or a
	// liveness probe would restart the follower all night.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		checkHealthz(t, logs)
	}
	select {
	case err := <-exited:
		t.Fatalf("the follower exited (%v) instead of waiting for the day:\n%s", err, logs)
	default:
	}
	if n := b.count(t, "status = 'done'"); n != 2 {
		t.Errorf("%d rows done, want the cap's 2", n)
	}
	s := stopFollower(t, cmd, exited, &stdout, logs)
	if !s.Success || s.ExitCode != 143 || s.Stop != "interrupted" || s.Done != 2 {
		t.Errorf("summary %+v: want success, exit 143, stop interrupted, the 2 rows done", s)
	}
	if n := b.count(t, "locked_by IS NOT NULL"); n != 0 {
		t.Errorf("%d rows still leased", n)
	}
}

// TestFollowSourceTable: a follower of a source table ([source], the user's crm.customers
// enriched in place) answers a customer inserted after it started, woken by the source link's
// notification (the state table's OID, the convention's payload) with a poll interval of an
// hour; a SIGTERM then ends it as it ends a run (exit 143). The CLI runs in-process.
func TestFollowSourceTable(t *testing.T) {
	t.Parallel()
	b := setupSourceCLI(t, "\n[run]\nfollow = true\npoll_interval = \"1h\"\n")
	b.cli(t, "migrate")
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	logs, out := &output{}, &output{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"run", "--log-format", "json", "--log-level", "debug", "--progress", "off", "--summary", "json"},
			stdio{in: strings.NewReader(""), out: out, err: logs, getenv: envOf(b.env)})
	}()
	waitSeen(t, logs, `"message":"follow: listening for rows becoming due"`, 60*time.Second)
	waitSeen(t, logs, `"message":"follow: nothing due: waiting for a notification or the poll"`, 60*time.Second)
	state, err := store.StateTable("crm.customers")
	if err != nil {
		t.Fatal(err)
	}
	for i, phone := range []string{"8 900 555-01-01", "+7 900 555-01-02"} {
		id := b.insert(t, phone)[0]
		deadline := time.Now().Add(60 * time.Second)
		for {
			var status string
			if err := b.pool.QueryRow(context.Background(), `SELECT status FROM `+state+` WHERE source_key = $1`, id).
				Scan(&status); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				t.Fatal(err)
			}
			if status == "done" || status == "failed" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("customer %d (%s) not answered within 60 s; logs:\n%s", id, phone, logs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if n := strings.Count(logs.String(), `"by":"notification"`); n < i+2 {
			t.Errorf("after customer %d the follower was woken by %d notifications, want %d", i+1, n, i+2)
		}
	}
	cancel(signalStop{syscall.SIGTERM})
	select {
	case err := <-done:
		if code := exitCode(err, syscall.SIGTERM); code != 143 {
			t.Fatalf("exit %d (%v) after SIGTERM, want 143; logs:\n%s", code, err, logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no end within 60 s of SIGTERM; logs:\n%s", logs)
	}
	if !strings.Contains(out.String(), `"exit_code": 143`) && !strings.Contains(out.String(), `"exit_code":143`) {
		t.Errorf("no summary with exit code 143:\n%s", out)
	}
}

// stopFollower sends the follower SIGTERM, wants exit 143 within a minute, and returns the
// summary it printed on stdout.
func stopFollower(t *testing.T, cmd *exec.Cmd, exited <-chan error, stdout *bytes.Buffer, logs *output) summaryJSON {
	t.Helper()
	sigterm143(t, cmd, exited, logs)
	var s summaryJSON
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("summary: %v\n%s", err, stdout.String())
	}
	return s
}

// sigterm143 sends the follower SIGTERM and wants exit 143 within a minute.
func sigterm143(t *testing.T, cmd *exec.Cmd, exited <-chan error, logs *output) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if code := exitStatus(err); code != 143 {
			t.Fatalf("exit %d after SIGTERM, want 143; logs:\n%s", code, logs)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("no exit within 60 s of SIGTERM; logs:\n%s", logs)
	}
}
