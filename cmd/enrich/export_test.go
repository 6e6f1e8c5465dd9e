package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/jackc/pgx/v5/pgxpool"
)

// seedExport adds rows 1-3 done (checked 1 h, 2 h and 50 h ago), 4-5 failed (1 h and 100 h ago),
// and 6 pending (never checked, updated now).
func seedExport(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	_, err := pool.Exec(context.Background(), `
INSERT INTO contacts (id, phone_number, status, exists_whatsapp, reason, checked_at) OVERRIDING SYSTEM VALUE VALUES
 (1, '79000000001', 'done', true, '', now() - interval '1 hour'),
 (2, '79000000002', 'done', false, '', now() - interval '2 hours'),
 (3, '79000000003', 'done', true, '', now() - interval '50 hours'),
 (4, '79000000004', 'failed', NULL, 'http 400, "bad"', now() - interval '1 hour'),
 (5, '79000000005', 'failed', NULL, 'http 400, "bad"', now() - interval '100 hours'),
 (6, '79000000006', 'pending', NULL, NULL, NULL)`)
	if err != nil {
		t.Fatalf("seed: %v", err)
	}
}

// exportedIDs reads the ids of an export in format, checking each CSV record has every column.
func exportedIDs(t *testing.T, format, out string) []string {
	t.Helper()
	var ids []string
	if format == "jsonl" {
		dec := json.NewDecoder(strings.NewReader(out))
		for dec.More() {
			var row map[string]any
			if err := dec.Decode(&row); err != nil {
				t.Fatalf("jsonl: %v\n%s", err, out)
			}
			if len(row) != 11 {
				t.Errorf("jsonl row has %d keys, want 11: %v", len(row), row)
			}
			ids = append(ids, fmt.Sprint(row["id"]))
		}
		return ids
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, out)
	}
	if len(recs) == 0 || strings.Join(recs[0], ",") != "id,phone_number,chat_id,status,exists_whatsapp,avatar_available,"+
		"url_avatar,reason,attempts,checked_at,updated_at" {
		t.Fatalf("csv without its header:\n%s", out)
	}
	for _, r := range recs[1:] {
		ids = append(ids, r[0])
	}
	return ids
}

// TestExportCLI (table-driven, a database each): the flags select the rows, to stdout or to a
// file, and the count goes to stderr.
func TestExportCLI(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		args   []string
		format string
		ids    string
	}{
		{name: "default is done as csv", format: "csv", ids: "1 2 3"},
		{name: "all", args: []string{"--status", "all"}, format: "csv", ids: "1 2 3 4 5 6"},
		{name: "failed as jsonl", args: []string{"--status", "failed", "--format", "jsonl"}, format: "jsonl", ids: "4 5"},
		{name: "pending", args: []string{"--status", "pending", "--format", "jsonl"}, format: "jsonl", ids: "6"},
		{name: "since an age", args: []string{"--since", "24h"}, format: "csv", ids: "1 2"},
		{name: "since days", args: []string{"--since", "3d", "--status", "all"}, format: "csv", ids: "1 2 3 4 6"},
		{name: "since a time", args: []string{"--since", "2000-01-02T15:04:05+03:00"}, format: "csv", ids: "1 2 3"},
		{name: "since a date", args: []string{"--since", "2999-01-02", "--status", "all"}, format: "csv", ids: ""},
		{name: "to a file", args: []string{"--output", "FILE", "--status", "failed"}, format: "csv", ids: "4 5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDB(t)
			seedExport(t, pgtest.Connect(t, dbURL))
			dir := t.TempDir()
			file := filepath.Join(dir, "out.csv")
			args := []string{"export"}
			for _, a := range tc.args {
				args = append(args, strings.ReplaceAll(a, "FILE", file))
			}
			out, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": dbURL}, args...)
			if err != nil {
				t.Fatalf("%v: %v\n%s", args, err, stderr)
			}
			n := len(strings.Fields(tc.ids))
			dest := "stdout"
			if slices.Contains(tc.args, "--output") {
				if out != "" {
					t.Errorf("%v printed %q on stdout, want nothing", args, out)
				}
				b, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				out, dest = string(b), file
				if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s: %v, %v; want mode 0600", file, fi.Mode(), err)
				}
				if ents, _ := os.ReadDir(dir); len(ents) != 1 {
					t.Errorf("%s holds %d files, want only the export", dir, len(ents))
				}
			}
			if got := strings.Join(exportedIDs(t, tc.format, out), " "); got != tc.ids {
				t.Errorf("%v exported ids %q, want %q", args, got, tc.ids)
			}
			if want := fmt.Sprintf("exported %d rows to %s; ", n, dest); !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, stderr)
			}
		})
	}
}

// TestExportCLIRefuses: bad flags are usage errors (exit 1) naming the flag and the fix, found
// before the database is asked anything (it is a closed port here), and leave no file.
func TestExportCLIRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "out.csv")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--format", "xml"}, []string{`--format "xml"`, "use --format csv or --format jsonl"}},
		{[]string{"--format", "CSV"}, []string{`--format "CSV"`}},
		{[]string{"--status", "Done"}, []string{`--status "Done"`, "done, failed, pending or all"}},
		{[]string{"--since", "yesterday"}, []string{"since", `"yesterday" is neither a time`, "2026-01-02T15:04:05Z", "24h or 7d"}},
		{[]string{"--since", "-24h"}, []string{"since", "an age must be positive"}},
		{[]string{"--since", "0s"}, []string{"since", "an age must be positive"}},
		{[]string{"--output", ""}, []string{"--output is empty"}},
		{[]string{"--output", dir}, []string{"--output", "is a directory"}},
		{[]string{"--output", filepath.Join(dir, "no", "such", "dir.csv")}, []string{"--output", "no such file or directory"}},
		{[]string{"extra"}, []string{`unexpected argument "extra"`}},
	} {
		args := append([]string{"export"}, tc.args...)
		if !slices.Contains(args, "--output") {
			args = append(args, "--output", file)
		}
		_, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, args...)
		if !isConfigError(err) || exitCode(err, nil) != exitConfig {
			t.Errorf("export %v: %v; want a usage error (exit 1)", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("export %v: %q lacks %q", tc.args, err, w)
			}
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("refused exports left %d files in %s", len(ents), dir)
	}
}

// TestExportCLIKeepsOldFile: an export that fails (here the database is a closed port: exit 3)
// leaves the previous file as it was and no temporary file.
func TestExportCLIKeepsOldFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "out.csv")
	if err := os.WriteFile(file, []byte("yesterday's export\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "export", "--output", file)
	if exitCode(err, nil) != exitDatabase || !strings.Contains(err.Error(), "was not written") {
		t.Errorf("export to a closed port: %v (exit %d); want exit %d saying the file was not written", err, exitCode(err, nil), exitDatabase)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "yesterday's export\n" {
		t.Errorf("the old file now holds %q (%v)", b, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%s holds %d files, want only the old export", dir, len(ents))
	}
}

// TestExportHelp: export --help lists its flags and what it writes.
func TestExportHelp(t *testing.T) {
	t.Parallel()
	_, stderr, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "export", "--help")
	if exitCode(err, nil) != exitOK {
		t.Fatalf("export --help: %v", err)
	}
	for _, want := range []string{"Usage: enrich export [--format csv|jsonl]", "\n  -format string", "\n  -status string",
		`(default "done")`, "\n  -since TIME", "checked_at", "7d", "\n  -output FILE", "\n  -table ", "exported N rows to FILE",
		"RFC 3339 in UTC"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("export --help lacks %q:\n%s", want, stderr)
		}
	}
	out, _, _ := runCLI(t, nil, "--help")
	if !strings.Contains(out, "\n  export ") {
		t.Errorf("enrich --help does not list export:\n%s", out)
	}
}

// exportRows is the size of the table TestExportLarge exports. The million-row figure (peak
// RSS) is make bench's, scenario memory.
const exportRows = 200_000

// exportPeakRSS bounds the export's peak resident memory: a Go program's floor plus buffers, far
// below what holding the rows would take (over 40 MiB as CSV text alone here).
const exportPeakRSS = 64 << 20

// TestExportLarge runs the real binary on a table of 200,000 done rows (and a thousand failed
// ones, which the default --status done leaves out): as CSV into a file and as JSONL to stdout,
// each must have every row, the rows checked must be exactly as stored, and the peak RSS must
// stay under 64 MiB; a SIGINT stops it with exit 130.
func TestExportLarge(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewDB(t)
	pool := pgtest.Connect(t, dbURL)
	if _, err := pool.Exec(context.Background(), `
INSERT INTO contacts (id, phone_number, status, exists_whatsapp, avatar_available, url_avatar, reason, attempts,
                      checked_at, updated_at) OVERRIDING SYSTEM VALUE
SELECT i, (79000000000 + i)::text, CASE WHEN i <= $1 THEN 'done' ELSE 'failed' END, true, i % 2 = 0,
       CASE WHEN i % 2 = 0 THEN 'https://pps.whatsapp.net/v/t61.24694-24/' || i || '_n.jpg?ccb=11-4&oh=01_Q5AaI&oe=6780A1B2' END,
       CASE WHEN i % 2 = 0 THEN '' ELSE 'no avatar, "private"' END, 1,
       '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second', '2026-01-01 00:00:00+00'::timestamptz + i * interval '1 second'
FROM generate_series(1, $1 + 1000) AS i`, exportRows); err != nil {
		t.Fatalf("seed: %v", err)
	}
	bin := enrichBinary(t)
	// The rows checked by content: the first, one in the middle, the last (even ids have a link).
	at := func(i int) string {
		return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second).Format(time.RFC3339)
	}
	link := func(i int) string {
		return fmt.Sprintf("https://pps.whatsapp.net/v/t61.24694-24/%d_n.jpg?ccb=11-4&oh=01_Q5AaI&oe=6780A1B2", i)
	}
	csvEven := func(i int) string {
		return fmt.Sprintf("%d,%d,,done,true,true,%s,,1,%s,%s", i, 79000000000+i, link(i), at(i), at(i))
	}
	csvWant := map[int]string{
		1:              `1,79000000001,,done,true,false,,"no avatar, ""private""",1,2026-01-01T00:00:01Z,2026-01-01T00:00:01Z`,
		exportRows / 2: csvEven(exportRows / 2),
		exportRows:     csvEven(exportRows),
	}
	jsonWant := map[int]string{
		1: `{"id":1,"phone_number":"79000000001","chat_id":null,"status":"done","exists_whatsapp":true,"avatar_available":false,` +
			`"url_avatar":null,"reason":"no avatar, \"private\"","attempts":1,"checked_at":"2026-01-01T00:00:01Z","updated_at":"2026-01-01T00:00:01Z"}`,
		exportRows: fmt.Sprintf(`{"id":%d,"phone_number":"%d","chat_id":null,"status":"done","exists_whatsapp":true,"avatar_available":true,`+
			`"url_avatar":"%s","reason":"","attempts":1,"checked_at":"%s","updated_at":"%s"}`,
			exportRows, 79000000000+exportRows, link(exportRows), at(exportRows), at(exportRows)),
	}
	// check reads an export line by line (no field here holds a newline): the header if any,
	// then each row in id order, comparing the rows of want. It may run on a goroutine of its
	// own, so it never stops the test.
	check := func(t *testing.T, r io.Reader, header bool, want map[int]string) int {
		t.Helper()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		if header && (!sc.Scan() || !strings.HasPrefix(sc.Text(), "id,phone_number,")) {
			t.Errorf("no header: %q", sc.Text())
		}
		n := 0
		for sc.Scan() {
			n++
			if w, ok := want[n]; ok && sc.Text() != w {
				t.Errorf("row %d:\n got %s\nwant %s", n, sc.Text(), w)
			}
			if prefix := fmt.Sprintf("%d,", n); header && !strings.HasPrefix(sc.Text(), prefix) {
				t.Errorf("line %d is %q, want row %d", n, sc.Text(), n)
				return n
			}
		}
		if err := sc.Err(); err != nil {
			t.Error(err)
		}
		return n
	}
	run := func(t *testing.T, stdout io.Writer, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "ENRICH_CONFIG=")
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		hwm := watchPeakRSS(cmd.Process.Pid)
		err := cmd.Wait()
		peak := hwm()
		if err != nil {
			t.Fatalf("enrich %v: %v\n%s", args, err, stderr.String())
		}
		ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
		t.Logf("enrich %v: peak RSS %.1f MiB (VmHWM; rusage Maxrss %.1f MiB, which counts this test process's own peak, "+
			"see watchPeakRSS), user %v, system %v", args, float64(peak)/(1<<20), float64(ru.Maxrss)/1024,
			cmd.ProcessState.UserTime(), cmd.ProcessState.SystemTime())
		if peak == 0 {
			t.Errorf("enrich %v: no VmHWM read from /proc", args)
		}
		if peak > exportPeakRSS {
			t.Errorf("enrich %v: peak RSS %.1f MiB, want at most %d MiB", args, float64(peak)/(1<<20), exportPeakRSS>>20)
		}
		return stderr.String()
	}
	t.Run("CSVFile", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "contacts.csv")
		stderr := run(t, io.Discard, "export", "--format", "csv", "--output", file)
		if want := fmt.Sprintf("exported %d rows to %s; ", exportRows, file); !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
		fh, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if n := check(t, fh, true, csvWant); n != exportRows {
			t.Errorf("%s has %d rows, want %d", file, n, exportRows)
		}
	})
	t.Run("JSONLStdout", func(t *testing.T) {
		pr, pw := io.Pipe()
		counted := make(chan int, 1)
		go func() {
			counted <- check(t, pr, false, jsonWant)
			_, _ = io.Copy(io.Discard, pr)
		}()
		stderr := run(t, pw, "export", "--format", "jsonl")
		pw.Close()
		if n := <-counted; n != exportRows {
			t.Errorf("stdout had %d rows, want %d", n, exportRows)
		}
		if want := fmt.Sprintf("exported %d rows to stdout; ", exportRows); !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	})
	// SIGINT mid-export: the export stops at the next fetch with exit 130, logged as a stop, not
	// a failure. The signal is sent once the first row has been read and this test reads no
	// more: the export then has at most two buffers (the pipe's, its own) of rows written, far
	// from its 200,000.
	t.Run("SIGINT", func(t *testing.T) {
		cmd := exec.Command(bin, "export", "--format", "jsonl")
		cmd.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "ENRICH_CONFIG=")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		if !sc.Scan() || !strings.HasPrefix(sc.Text(), `{"id":1,`) {
			t.Fatalf("first line %q (%v)", sc.Text(), sc.Err())
		}
		if err := cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		n := 1
		for sc.Scan() {
			n++
		}
		err = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("exit %d (%v), want 130\n%s", code, err, stderr.String())
		}
		if n >= exportRows || strings.Contains(stderr.String(), "exported") || !strings.Contains(stderr.String(), "stopped by SIGINT") {
			t.Errorf("%d rows on stdout, stderr:\n%s\nwant fewer than %d and a stop by SIGINT", n, stderr.String(), exportRows)
		}
		t.Logf("stopped after %d rows", n)
	})
}
