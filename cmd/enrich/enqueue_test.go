package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/enrich-dev/enrich/enrich"
	"github.com/enrich-dev/enrich/internal/pgtest"
	"github.com/enrich-dev/enrich/store"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// enqueueBundle is a store on a database of the test's own (pgtest: migrated, empty).
type enqueueBundle struct {
	ctx  context.Context
	pool *pgxpool.Pool
	st   *store.Store
}

func setupEnqueue(t *testing.T) *enqueueBundle {
	t.Helper()
	pool := pgtest.NewPool(t)
	st, err := store.New(pool, store.Config{})
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	return &enqueueBundle{ctx: context.Background(), pool: pool, st: st}
}

// rows lists the table as "phone_number chat_id" ("-" for NULL), sorted.
func (b *enqueueBundle) rows(t *testing.T) []string {
	t.Helper()
	q := "SELECT coalesce(phone_number, '-') || ' ' || coalesce(chat_id, '-') FROM " + b.st.Table()
	rs, err := b.pool.Query(b.ctx, q)
	if err != nil {
		t.Fatalf("read rows: %v", err)
	}
	got, err := pgx.CollectRows(rs, pgx.RowTo[string])
	if err != nil {
		t.Fatalf("read rows: %v", err)
	}
	sort.Strings(got)
	return got
}

// count is the number of rows in the table.
func (b *enqueueBundle) count(t *testing.T) int64 {
	t.Helper()
	var n int64
	if err := b.pool.QueryRow(b.ctx, "SELECT count(*) FROM "+b.st.Table()).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

// phone and chat are rows as rows() prints them.
func phone(p string) string { return p + " -" }
func chat(c string) string  { return "- " + c }

func TestEnqueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		seed         []store.NewContact // rows already in the table
		in           string
		want         enqueueReport
		wantRejected []int    // line numbers reported as rejected, in order
		wantRows     []string // the whole table afterwards, any order
		wantErr      bool     // a *configError after the lines before the bad one were enqueued
	}{
		{
			name: "formatted phone numbers are stored as digits",
			in:   "+7 (900) 123-45-67\n7.900.123.45.68\n\t+44 20 7946 0958 \n8-800-555-35-35\n+1 (212) 555-0100\n",
			want: enqueueReport{Inserted: 5, National: 1}, // 8-800-...: stored as given, counted
			wantRows: []string{phone("79001234567"), phone("79001234568"), phone("442079460958"),
				phone("88005553535"), phone("12125550100")},
		},
		{
			name: "chatIds are stored as given",
			in:   "79001234567@c.us\n447700900123@c.us\n79001234567-1581234048@g.us\n120363043968066561@g.us\n",
			want: enqueueReport{Inserted: 4},
			wantRows: []string{chat("79001234567@c.us"), chat("447700900123@c.us"),
				chat("79001234567-1581234048@g.us"), chat("120363043968066561@g.us")},
		},
		{
			name:     "blank lines and comments are skipped",
			in:       "\n# numbers from the CRM\n   \n\t# indented comment\n79001234567\n\n#79001234568\n  \t \n",
			want:     enqueueReport{Inserted: 1},
			wantRows: []string{phone("79001234567")},
		},
		{
			name:         "rejected lines are reported with their line numbers",
			in:           "79001234567\nhello\n\n123\n# fine\n79001234567@c.uss\n+7 900 123 45 6x\n79001234568\n1234567890123456\n79001234567@g.us\n",
			want:         enqueueReport{Inserted: 2, Rejected: 6},
			wantRejected: []int{2, 4, 6, 7, 9, 10},
			wantRows:     []string{phone("79001234567"), phone("79001234568")},
		},
		{
			// 10 to 15 digits, as numbers or chatIds (Brazil, Argentina, Singapore, Norway),
			// written with no-break spaces and Unicode dashes too.
			name: "every length Green API takes",
			in: "5511912345678\n+54 9 11 2345-6789\n+65\u00a09123\u00a04567\n+47\u202f912\u201334\u2212567\n" +
				"5521912345678@c.us\n6598765432@c.us\n123456789012345\n",
			want: enqueueReport{Inserted: 7},
			wantRows: []string{phone("5511912345678"), phone("5491123456789"), phone("6591234567"),
				phone("4791234567"), chat("5521912345678@c.us"), chat("6598765432@c.us"), phone("123456789012345")},
		},
		{
			// A phone number and its personal chatId are one target: the first form is stored.
			name:     "duplicates within the input",
			in:       "79001234567\n+7 900 123-45-67\n79001234567@c.us\n79001234567@c.us\n7 (900) 123 45 67\n",
			want:     enqueueReport{Inserted: 1, Duplicates: 4},
			wantRows: []string{phone("79001234567")},
		},
		{
			name:     "duplicates of rows already in the table",
			seed:     []store.NewContact{{PhoneNumber: "79001234567"}, {ChatID: "79001234568@c.us"}},
			in:       "+79001234567\n79001234568@c.us\n79001234569\n79001234568\n79001234567@c.us\n",
			want:     enqueueReport{Inserted: 1, Duplicates: 4},
			wantRows: []string{phone("79001234567"), phone("79001234569"), chat("79001234568@c.us")},
		},
		{
			name:         "CRLF line endings",
			in:           "# header\r\n79001234567\r\n\r\n79001234568@c.us\r\nbad\r\n+7 900 123-45-69\r\n",
			want:         enqueueReport{Inserted: 3, Rejected: 1},
			wantRejected: []int{5},
			wantRows:     []string{phone("79001234567"), phone("79001234569"), chat("79001234568@c.us")},
		},
		{
			name:     "a byte-order mark before the first line",
			in:       "\ufeff79001234567\n79001234568\n",
			want:     enqueueReport{Inserted: 2},
			wantRows: []string{phone("79001234567"), phone("79001234568")},
		},
		{
			name:     "no newline at the end",
			in:       "79001234567\n79001234568",
			want:     enqueueReport{Inserted: 2},
			wantRows: []string{phone("79001234567"), phone("79001234568")},
		},
		{
			name: "empty input",
			in:   "",
		},
		{
			name: "only comments",
			in:   "# nothing yet\n\n",
		},
		{
			name:     "a line too long stops the input, the lines before it are enqueued",
			in:       "79001234567\n" + strings.Repeat("7", 2<<20) + "\n79001234568\n",
			want:     enqueueReport{Inserted: 1},
			wantRows: []string{phone("79001234567")},
			wantErr:  true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := setupEnqueue(t)
			if len(tt.seed) > 0 {
				if _, err := b.st.Enqueue(b.ctx, tt.seed); err != nil {
					t.Fatalf("seed: %v", err)
				}
			}
			var errw bytes.Buffer
			got, err := enqueue(b.ctx, b.st, strings.NewReader(tt.in), "in.txt", enqueueOptions{}, &rejectLog{w: &errw, name: "in.txt"})
			var ce *configError
			switch {
			case tt.wantErr && !errors.As(err, &ce):
				t.Errorf("error %v (%T), want a *configError", err, err)
			case tt.wantErr && exitCode(err, nil) != exitConfig:
				t.Errorf("exit code %d, want %d", exitCode(err, nil), exitConfig)
			case !tt.wantErr && err != nil:
				t.Fatalf("enqueue: %v", err)
			}
			if got != tt.want {
				t.Errorf("report %+v, want %+v", got, tt.want)
			}

			var lines []string
			if s := strings.TrimSuffix(errw.String(), "\n"); s != "" {
				lines = strings.Split(s, "\n")
			}
			if len(lines) != len(tt.wantRejected) {
				t.Errorf("%d lines reported, want %d:\n%s", len(lines), len(tt.wantRejected), errw.String())
			}
			for i, n := range tt.wantRejected {
				if prefix := fmt.Sprintf("in.txt:%d: rejected: ", n); i < len(lines) && !strings.HasPrefix(lines[i], prefix) {
					t.Errorf("report line %d is %q, want it to start with %q", i+1, lines[i], prefix)
				}
			}

			want := append([]string(nil), tt.wantRows...)
			sort.Strings(want)
			if got := b.rows(t); !reflect.DeepEqual(got, want) && (len(got) > 0 || len(want) > 0) {
				t.Errorf("rows:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// lineReader produces n generated lines without holding them all, and calls atEOF when it
// first reports io.EOF.
type lineReader struct {
	n, next int
	line    func(i int) string
	buf     []byte
	atEOF   func()
}

func (r *lineReader) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) && r.next < r.n {
		r.buf = append(r.buf, r.line(r.next)...)
		r.next++
	}
	if len(r.buf) == 0 {
		if r.atEOF != nil {
			r.atEOF()
			r.atEOF = nil
		}
		return 0, io.EOF
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// TestEnqueueManyChunks: an input of several chunks is written chunk by chunk while it is
// read (so memory stays flat), and every line lands.
func TestEnqueueManyChunks(t *testing.T) {
	t.Parallel()
	const (
		lines  = 48_000
		unique = 44_000 // the last 4,000 lines repeat the first 4,000, in another chunk
	)
	if lines < 2*store.CopyChunkSize+1 {
		t.Fatalf("store.CopyChunkSize %d: the input must span at least three chunks", store.CopyChunkSize)
	}
	b := setupEnqueue(t)
	atEOF := int64(-1)
	in := &lineReader{
		n: lines,
		line: func(i int) string {
			n := i % unique
			if n%2 == 0 {
				return fmt.Sprintf("+7 (9%02d) %03d-%02d-%02d\r\n", n/10_000_000%100, n/10_000%1000, n/100%100, n%100)
			}
			return fmt.Sprintf("79%09d\n", n)
		},
		// When the input ends, every full chunk must be in the table already.
		atEOF: func() { atEOF = b.count(t) },
	}
	var errw bytes.Buffer
	got, err := enqueue(b.ctx, b.st, in, "big.txt", enqueueOptions{}, &rejectLog{w: &errw, name: "big.txt"})
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	if want := (enqueueReport{Inserted: unique, Duplicates: lines - unique}); got != want {
		t.Errorf("report %+v, want %+v", got, want)
	}
	if errw.Len() > 0 {
		t.Errorf("lines rejected:\n%.500s", errw.String())
	}
	if want := int64(lines / store.CopyChunkSize * store.CopyChunkSize); atEOF != want {
		t.Errorf("%d rows in the table when the input ended, want %d: the input is not written chunk by chunk", atEOF, want)
	}
	if n := b.count(t); n != unique {
		t.Errorf("%d rows in the table, want %d", n, unique)
	}
}

// TestEnqueueCommand runs `enrich enqueue` end to end: config file, DATABASE_URL, FILE or
// stdin, the summary on stdout and rejected lines on stderr.
func TestEnqueueCommand(t *testing.T) {
	t.Parallel()
	const input = "# contacts\n79001234567\n+7 900 123-45-67\nnot a number\n79001234568@c.us\n"
	type step struct {
		args       []string // after "enqueue --config CFG"; "{dir}" is replaced by a directory
		stdin      string
		code       int
		wantOut    string // exact stdout
		wantErr    string // in stderr
		wantErrNot string // not in stderr
	}
	tests := []struct {
		name     string
		steps    []step
		wantRows int64
	}{
		{
			name: "file, then the same file again",
			steps: []step{
				{args: []string{"{dir}/in.txt"}, wantOut: "inserted 2, duplicates 1, rejected 1\n", wantErr: "{dir}/in.txt:4: rejected: "},
				{args: []string{"{dir}/in.txt"}, wantOut: "inserted 0, duplicates 3, rejected 1\n", wantErr: "{dir}/in.txt:4: rejected: "},
			},
			wantRows: 2,
		},
		{
			name:     "stdin as -",
			steps:    []step{{args: []string{"-"}, stdin: input, wantOut: "inserted 2, duplicates 1, rejected 1\n", wantErr: "stdin:4: rejected: "}},
			wantRows: 2,
		},
		{
			name:     "stdin by default",
			steps:    []step{{stdin: "79001234567\r\n", wantOut: "inserted 1, duplicates 0, rejected 0\n", wantErrNot: "rejected"}},
			wantRows: 1,
		},
		{
			name:  "missing file",
			steps: []step{{args: []string{"{dir}/nothing.txt"}, code: exitConfig, wantErr: "nothing.txt"}},
		},
		{
			name:  "two files",
			steps: []step{{args: []string{"{dir}/in.txt", "{dir}/in.txt"}, code: exitConfig, wantErr: "one FILE"}},
		},
		{
			name: "table that does not exist",
			steps: []step{{args: []string{"--table", "nosuch", "{dir}/in.txt"}, code: exitDatabase, wantErr: "does not exist: run `enrich migrate`",
				wantErrNot: "rejected"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dbURL := pgtest.NewDB(t)
			dir := t.TempDir()
			writeFile(t, dir, "in.txt", input)
			// The file's url is never used: DATABASE_URL overrides it.
			cfg := writeFile(t, dir, "cfg.toml", "[database]\nurl = \""+closedURL+"\"\ntable = \"contacts\"\n\n[run]\nworkers = 2\n")
			env := map[string]string{"DATABASE_URL": dbURL}
			for i, s := range tt.steps {
				args := []string{"enqueue", "--config", cfg}
				for _, a := range s.args {
					args = append(args, strings.ReplaceAll(a, "{dir}", dir))
				}
				stdout, stderr, err := runCLIInput(t, s.stdin, env, args...)
				if code := exitCode(err, nil); code != s.code {
					t.Errorf("step %d: exit code %d, want %d; error: %v", i, code, s.code, err)
				}
				if s.wantOut != "" && stdout != s.wantOut {
					t.Errorf("step %d: stdout %q, want %q", i, stdout, s.wantOut)
				}
				if w := strings.ReplaceAll(s.wantErr, "{dir}", dir); !strings.Contains(stderr, w) {
					t.Errorf("step %d: stderr does not contain %q:\n%s", i, w, stderr)
				}
				if s.wantErrNot != "" && strings.Contains(stderr, s.wantErrNot) {
					t.Errorf("step %d: stderr contains %q:\n%s", i, s.wantErrNot, stderr)
				}
			}
			pool := pgtest.Connect(t, dbURL)
			var n int64
			if err := pool.QueryRow(context.Background(), "SELECT count(*) FROM contacts").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != tt.wantRows {
				t.Errorf("%d rows in the table, want %d", n, tt.wantRows)
			}
		})
	}
}

// TestEnqueueDatabaseDown: a database that does not answer is exit code 3, before any input is
// read.
func TestEnqueueDatabaseDown(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := writeFile(t, dir, "in.txt", "79001234567\n")
	stdout, _, err := runCLI(t, map[string]string{"DATABASE_URL": closedURL}, "enqueue", in)
	if !errors.Is(err, enrich.ErrDatabase) || exitCode(err, nil) != exitDatabase {
		t.Errorf("error %v, exit code %d, want a database error and %d", err, exitCode(err, nil), exitDatabase)
	}
	if stdout != "" {
		t.Errorf("stdout %q, want nothing", stdout)
	}
}
